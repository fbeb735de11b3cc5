// Checkpoint save and load speed for a recipe's full training state (parameters and AdamW
// moments, ZeRO-1 shards across ranks), on 1 rank or under mpirun:
//   bench_checkpoint RECIPE OUT_DIR [--reps N]
//   mpirun -np 4 bench_checkpoint RECIPE OUT_DIR
// Prints the bytes written, the time blocked in the host snapshot (what an asynchronous save
// would block a step for), the save (write, fsync, commit) and load (verify, read, restore)
// times and MB/s.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "checkpoint/checkpoint.h"
#include "config/recipe.h"
#include "parallel/comm_mpi.h"
#include "parallel/data_parallel.h"
#include "parallel/launch_env.h"
#include "trainer/checkpoint_writer.h"
#include "trainer/train_state.h"

using namespace sy;
using Clock = std::chrono::steady_clock;
static double secs(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_checkpoint RECIPE OUT_DIR [--reps N]\n");
    return 2;
  }
  int reps = 3;
  for (int i = 3; i + 1 < argc; ++i)
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  try {
    const Recipe r = load_recipe(argv[1]);
    const std::string out = argv[2];
    const LaunchEnv env = read_launch_env();
    auto world = env.world > 1 ? make_mpi_world_comm(600) : make_local_comm();
    {
      auto be = make_cpu_backend();
      Model model(r.model, *be, DType::F32, 1, ModelShard{{}, world->size(), world->size(), {}, {}});
      auto ep = make_local_comm(), tp = make_local_comm();
      DataParallel dp({world.get(), tp.get(), ep.get(), world.get(), world.get()}, *be, model.params(),
                      world->size() > 1 ? 1 : 0, 1 << 20);
      Optimizer opt(r.optim, model.params(), *be, 10, dp.optimizer_shard());
      double t_snap = 0, t_save = 0, t_load = 0;
      int64_t bytes = 0;
      for (int rep = 0; rep < reps; ++rep) {
        world->barrier();
        auto t = Clock::now();
        StateSnapshot snap = snapshot_state(
            model, opt, world->rank() == 0, [&](const ParamInfo& p) { return dp.writes_value(p); },
            [&](const ParamInfo& p) { return dp.writes_moments(p); });
        t_snap += secs(t);
        int64_t mine = 0;
        for (const auto& b : snap.buffers) mine += int64_t(b.size());
        world->all_reduce(&mine, 1, CommType::I64, ReduceOp::Sum);
        bytes = mine;
        SaveRequest req{out, rep + 1, std::move(snap.pieces), {{"bench", "1"}}, 2};
        t = Clock::now();
        save_checkpoint(*world, req);
        t_save += secs(t);
        world->barrier();
        t = Clock::now();
        CheckpointReader ck(find_resume_checkpoint(out));
        restore_state(ck, model, opt);
        world->barrier();
        t_load += secs(t);
      }
      // checkpoint.async: what the training step is blocked for (snapshot + starting the write),
      // then the commit once the background write is done.
      double t_block = 0, t_commit = 0;
      {
        CheckpointWriter writer(*world, true);
        for (int rep = 0; rep < reps; ++rep) {
          world->barrier();
          auto t = Clock::now();
          StateSnapshot snap = snapshot_state(
            model, opt, world->rank() == 0, [&](const ParamInfo& p) { return dp.writes_value(p); },
            [&](const ParamInfo& p) { return dp.writes_moments(p); });
          SaveRequest req{out, 100 + rep, snap.pieces, {{"bench", "async"}}, 2};
          writer.save(std::move(snap), std::move(req));
          t_block += secs(t);
          while (writer.busy()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
          world->barrier();
          t = Clock::now();
          writer.finish();
          t_commit += secs(t);
        }
      }
      if (world->rank() == 0)
        std::printf("%s on %d rank(s): %.1f MB per checkpoint | snapshot %.3f s | save %.3f s (%.0f MB/s) | "
                    "load %.3f s (%.0f MB/s) | async: step blocked %.3f s, commit %.3f s\n",
                    r.name.c_str(), world->size(), bytes / 1e6, t_snap / reps, t_save / reps,
                    bytes / 1e6 / (t_save / reps), t_load / reps, bytes / 1e6 / (t_load / reps), t_block / reps,
                    t_commit / reps);
    }
    world.reset();
    mpi_finalize_if_initialised();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_checkpoint: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
