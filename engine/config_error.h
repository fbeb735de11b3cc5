// The error type for bad user input (recipes, data, CLI): its message is one line that names the
// problem and the fix; the CLI prints it and exits with code 2.
#pragma once

#include <stdexcept>
#include <string>

namespace sy {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace sy
