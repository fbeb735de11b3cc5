// Settings the cuda-emu training tests share: the tiny recipe cut to sequence 32 and one sequence
// per micro-batch (the emulator runs every GPU thread as a fiber), a record every step, no
// evaluation or checkpoints, and the switch to the emulated CUDA backend.
#pragma once

namespace sy::testing {

inline constexpr const char* kTiny = "recipes/tiny-moe.toml";
inline constexpr const char* kTinyShort =
    " --set model.seq_len=32 --set train.micro_batch=1 --set train.log_every=1 --set train.eval_every=0"
    " --set train.eval_batches=1 --set train.max_minutes=0 --set checkpoint.every_steps=0";
inline constexpr const char* kEmu = " --set engine.device=cuda-emu";

}  // namespace sy::testing
