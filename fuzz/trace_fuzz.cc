// Trace and history CSV (drover simulate --trace, drover history import): any bytes give a
// trace or an error naming the line, never a crash.
#include <cstdint>
#include <string>

#include "sim/simulator.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)drover::sim::ParseTrace(text, "fuzz");
  return 0;
}
