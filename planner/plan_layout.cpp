#include "planner/plan_layout.h"

namespace sy {

std::vector<std::string> PlanLayout::to_recipe_sets() const {
  std::vector<std::string> v = {"parallel.tp=" + std::to_string(tp),   "parallel.pp=" + std::to_string(pp),
                                "parallel.vpp=" + std::to_string(vpp), "parallel.dp=" + std::to_string(dp),
                                "parallel.ep=" + std::to_string(ep),   "parallel.etp=" + std::to_string(etp),
                                "parallel.zero=" + std::to_string(zero), std::string("parallel.sp=") + (sp ? "true" : "false"),
                                "train.micro_batch=" + std::to_string(micro_batch),
                                "train.grad_accum=" + std::to_string(micro_batches)};
  if (!pp_layers.empty()) {
    std::string list;
    for (int64_t n : pp_layers) list += (list.empty() ? "" : ",") + std::to_string(n);
    v.push_back("parallel.pp_layers=[" + list + "]");
  }
  return v;
}

std::string PlanLayout::text() const {
  std::string s = "tp" + std::to_string(tp) + " pp" + std::to_string(pp);
  if (vpp > 1) s += " vpp" + std::to_string(vpp);
  s += " dp" + std::to_string(dp) + " ep" + std::to_string(ep);
  if (etp > 1) s += " etp" + std::to_string(etp);
  s += " zero" + std::to_string(zero);
  if (sp) s += " sp";
  return s + " mb" + std::to_string(micro_batch) + "x" + std::to_string(micro_batches);
}

}  // namespace sy
