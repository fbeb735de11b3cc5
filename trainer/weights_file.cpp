#include "trainer/weights_file.h"

#include "checkpoint/weights_io.h"
#include "engine/config_error.h"

namespace sy {

void save_weights(Model& model, const std::string& path, const std::map<std::string, std::string>& attrs) {
  Backend& be = model.backend();
  std::vector<std::pair<std::string, HostArray>> arrays;
  const ParamStore& ps = model.params();
  for (size_t i = 0; i < ps.infos().size(); ++i)
    arrays.emplace_back(ps.infos()[i].name, download_array(be, ps.value(int(i))));
  for (auto& [name, t] : model.buffers()) arrays.emplace_back(name, download_array(be, t));
  write_weights_h5(path, arrays, attrs);
}

void load_weights(Model& model, const std::string& path) {
  Backend& be = model.backend();
  const std::map<std::string, HostArray> file = read_weights_h5(path);
  auto load_one = [&](const std::string& name, const Tensor& t) {
    auto it = file.find(name);
    if (it == file.end())
      throw ConfigError(path + ": no dataset " + name + "; the weights were written for another model config");
    if (it->second.shape != t.shape())
      throw ConfigError(path + ": " + name + " has shape " + shape_str(it->second.shape) + ", the model expects " +
                        shape_str(t.shape()) + "; use the recipe the weights were trained with");
    upload_array(be, it->second, t);
  };
  const ParamStore& ps = model.params();
  for (size_t i = 0; i < ps.infos().size(); ++i) load_one(ps.infos()[i].name, ps.value(int(i)));
  for (auto& [name, t] : model.buffers()) load_one(name, t);
}

}  // namespace sy
