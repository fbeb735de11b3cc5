// Where the token files live: the recipe's [data] section.
#pragma once

#include <string>

namespace sy {

struct DataConfig {
  std::string train = "data/fortunes.train.tok";
  std::string val = "data/fortunes.val.tok";
};

}  // namespace sy
