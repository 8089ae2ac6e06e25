// The config file parser (drover serve --config): any bytes give options or an error that
// names a key, never a crash. TLS file names in the input are read (regular files only).
#include <cstdint>
#include <string>

#include "api/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)drover::api::ParseServeOptions(text, "fuzz", drover::v1::ServerConfig());
  return 0;
}
