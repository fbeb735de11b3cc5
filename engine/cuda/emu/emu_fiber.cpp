// Fiber context switching (see emu_fiber.h).
#include "engine/cuda/emu/emu_fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <new>

namespace syemu::fiber {

namespace {
size_t page_bytes() {
  static const size_t page = size_t(sysconf(_SC_PAGESIZE));
  return page;
}
}  // namespace

Stack::Stack(size_t usable_bytes) {
  const size_t page = page_bytes();
  bytes_ = (usable_bytes + page - 1) / page * page + page;
  void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  base_ = static_cast<std::byte*>(p);
  mprotect(base_, page, PROT_NONE);
}

Stack::~Stack() {
  if (base_) munmap(base_, bytes_);
}

void* Stack::lo() const { return base_ + page_bytes(); }
size_t Stack::usable() const { return bytes_ - page_bytes(); }

}  // namespace syemu::fiber

#if defined(__x86_64__)

// sy_emu_switch(void** save_sp, void* new_sp): pushes the System V callee-saved registers and the
// MXCSR / x87 control words on the current stack, stores the stack pointer, loads the other one
// and pops the same frame from it. `ret` then continues wherever that context last switched out.
asm(R"(
  .text
  .p2align 4
  .type sy_emu_switch, @function
sy_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size sy_emu_switch, .-sy_emu_switch
)");

extern "C" void sy_emu_switch(void** save_sp, void* new_sp);

namespace syemu::fiber {

void make(Context& c, void* lo, size_t bytes, void (*entry)()) {
  // From the 16-byte aligned top down: a zero return address for entry (so that at entry
  // rsp + 8 is 16-byte aligned, as the ABI wants), entry itself for sy_emu_switch's `ret`, six
  // zeroed registers, and this thread's MXCSR and x87 control word.
  auto top = (reinterpret_cast<uintptr_t>(lo) + bytes) & ~uintptr_t(15);
  auto* slot = reinterpret_cast<uint64_t*>(top);
  *--slot = 0;
  *--slot = reinterpret_cast<uint64_t>(entry);
  for (int i = 0; i < 6; ++i) *--slot = 0;
  uint32_t mxcsr;
  uint16_t fpucw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  --slot;
  std::memcpy(reinterpret_cast<char*>(slot), &mxcsr, 4);
  std::memcpy(reinterpret_cast<char*>(slot) + 4, &fpucw, 2);
  c.sp = slot;
}

void swap(Context& from, Context& to) { sy_emu_switch(&from.sp, to.sp); }

}  // namespace syemu::fiber

#else

namespace syemu::fiber {

void make(Context& c, void* lo, size_t bytes, void (*entry)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = lo;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, entry, 0);
}

void swap(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

}  // namespace syemu::fiber

#endif
