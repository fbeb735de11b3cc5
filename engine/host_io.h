// Moving small float arrays between the host (always double there) and a tensor of either float
// dtype: router statistics, balancing biases, initial values, test fixtures.
#pragma once

#include <vector>

#include "engine/backend.h"

namespace sy {

std::vector<double> download_f64(Backend& be, const Tensor& t);
void upload_f64(Backend& be, const std::vector<double>& host, const Tensor& t);

}  // namespace sy
