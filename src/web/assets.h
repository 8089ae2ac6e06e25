// web/assets: the dashboard's built files (the Vite build of web/), compiled into the
// binary, so `drover serve` serves its dashboard offline with no second process.
//
// The files are generated at build time (embed.py, from scripts/build-web.sh's output);
// nothing here is written by hand.
#pragma once

#include <cstddef>
#include <string_view>

namespace drover::web {

struct Asset {
  std::string_view path;          // "/index.html", "/assets/index-3f2a.js"
  std::string_view content_type;  // "text/javascript; charset=utf-8", ...
  std::string_view data;
  std::string_view gzip;  // the same, gzip-compressed; empty when that is not smaller
  std::string_view etag;  // a quoted hash of data
};

// The file at `path`, or nullptr.
const Asset* FindAsset(std::string_view path);
size_t AssetCount();
const Asset* AssetAt(size_t i);  // i < AssetCount(), in path order
size_t AssetBytes();             // the files' total size, uncompressed

}  // namespace drover::web
