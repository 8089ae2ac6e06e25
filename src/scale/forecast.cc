#include "scale/forecast.h"

#include <algorithm>

namespace drover::scale {

Series Series::Prefix(size_t n) const {
  Series s;
  s.start_minute = start_minute;
  n = std::min(n, arrivals.size());
  s.arrivals.assign(arrivals.begin(), arrivals.begin() + static_cast<ptrdiff_t>(n));
  if (!queue.empty()) {
    s.queue.assign(queue.begin(),
                   queue.begin() + static_cast<ptrdiff_t>(std::min(n, queue.size())));
  }
  return s;
}

}  // namespace drover::scale
