// Calls the public API through the installed package: prints the GPUs it sees (0 is fine).
#include <flashkernel/flashkernel.h>

#include <cstdio>

int main() {
  int n = flashkernel::device_count();
  std::printf("flashkernel consumer: %d CUDA device(s)\n", n);
  if (n > 0) std::printf("device 0: %s\n", flashkernel::device_info(0).name.c_str());
  try {
    flashkernel::vector_add(nullptr, nullptr, nullptr, -1, flashkernel::DType::kFloat32);
  } catch (const flashkernel::ArgumentError& e) {
    std::printf("argument check works: %s\n", e.what());
    return 0;
  }
  return 1;
}
