// Fiber context switching for the emulator's scheduler. glibc's swapcontext saves and restores
// the signal mask with a system call on every switch, which made it most of the emulator's run
// time (a block of 256 threads switches thousands of times); on x86-64 a switch here is a dozen
// instructions that save the callee-saved registers and the floating-point control words. Other
// architectures use ucontext.
#pragma once

#include <cstddef>

#if defined(__x86_64__)
namespace syemu::fiber {
struct Context {
  void* sp = nullptr;
};
}  // namespace syemu::fiber
#else
#include <ucontext.h>
namespace syemu::fiber {
struct Context {
  ucontext_t uc;
};
}  // namespace syemu::fiber
#endif

namespace syemu::fiber {

// A fiber stack with an inaccessible guard page below it: an overflow faults instead of silently
// overwriting the neighbouring fiber's stack. Pages are committed only when touched.
class Stack {
 public:
  explicit Stack(size_t usable_bytes);
  Stack(Stack&& o) noexcept : base_(o.base_), bytes_(o.bytes_) { o.base_ = nullptr; }
  Stack(const Stack&) = delete;
  ~Stack();
  void* lo() const;       // the lowest usable address (above the guard page)
  size_t usable() const;  // bytes from lo() up

 private:
  std::byte* base_ = nullptr;
  size_t bytes_ = 0;
};

// Prepares `c` to run entry() on the stack [lo, lo + bytes) at its first switch; entry must never
// return (a finished fiber switches away for good).
void make(Context& c, void* lo, size_t bytes, void (*entry)());
// Saves the running context into `from` and resumes `to`.
void swap(Context& from, Context& to);

}  // namespace syemu::fiber
