// Reading what the planner is asked: the recipe (with the model fields it cannot guess), and a
// layout written as "tp=1,pp=4,ep=8,...". One-line ConfigErrors naming the problem and the fix.
#pragma once

#include <string>

#include "config/recipe.h"
#include "planner/plan_layout.h"

namespace sy {

// load_recipe, and a ConfigError when [model] leaves out a size the planner would otherwise take
// from the defaults (vocab_size, d_model, n_layers, n_heads, n_kv_heads, seq_len; with experts
// n_experts, top_k, expert_ffn_dim; with dense layers d_ff).
Recipe load_plannable_recipe(const std::string& path);

// "tp=1,pp=4,vpp=1,ep=8,etp=1,dp=2,zero=1,sp=1,mb=1": the keys given replace the defaults of
// PlanLayout (dp is derived from gpus when left out; micro_batches from the global batch).
PlanLayout parse_plan_layout(const std::string& text, int gpus, int64_t global_batch);

}  // namespace sy
