#include "runtime/model_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <sstream>
#include <stdexcept>

#include <boost/json.hpp>

#include "gpu/host_pages.hpp"
#include "runtime/detail/atomic_file.hpp"

namespace mws::runtime {
namespace {

constexpr std::size_t alignment_bytes = 64;
constexpr std::size_t name_bytes_max = 4096;
constexpr std::size_t rank_max = 16;

class model_error_category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "mws.model"; }
  std::string message(int ev) const override {
    switch (static_cast<model_errc>(ev)) {
      case model_errc::ok:
        return "success";
      case model_errc::unreadable:
        return "cannot read the model file";
      case model_errc::too_short:
        return "file shorter than its header length";
      case model_errc::header_too_large:
        return "header length too large";
      case model_errc::bad_header_json:
        return "header is not valid safetensors JSON";
      case model_errc::bad_tensor_entry:
        return "malformed tensor entry";
      case model_errc::unsupported_dtype:
        return "unsupported dtype";
      case model_errc::size_overflow:
        return "tensor size overflows";
      case model_errc::bad_offsets:
        return "tensor offsets are not contiguous inside the file";
      case model_errc::size_mismatch:
        return "tensor byte size does not match its shape";
      case model_errc::trailing_bytes:
        return "bytes after the last tensor";
      case model_errc::unwritable:
        return "cannot write the model file";
      case model_errc::manifest_mismatch:
        return "tensors differ from the expected manifest";
    }
    return "unknown mws.model error";
  }
};

model_error fail(model_errc code, std::string message) {
  return {code, std::move(message)};
}

// The same error with the file's path in front.
model_error about(const std::filesystem::path& path, model_error e) {
  e.message = path.string() + ": " + e.message;
  return e;
}

std::string tensor_named(std::string_view name) {
  return "tensor '" + std::string(name) + "'";
}

std::uint64_t read_le64(const std::byte* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i)
    v = (v << 8) | std::to_integer<std::uint64_t>(p[i]);
  return v;
}

// A JSON number that is a non-negative integer, or nothing.
std::optional<std::uint64_t> as_count(const boost::json::value& v) {
  if (v.is_uint64()) return v.get_uint64();
  if (v.is_int64() && v.get_int64() >= 0) return static_cast<std::uint64_t>(v.get_int64());
  return std::nullopt;
}

std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
  std::uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

std::string shape_text(const std::vector<std::uint64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Where each tensor's bytes lie in the file's data section.
struct layout {
  manifest spec;                          // sorted by name
  std::vector<std::uint64_t> data_begin;  // per tensor of spec, relative to the data section
  std::map<std::string, std::string> metadata;
};

model_result<tensor_spec> parse_entry(const std::string& name, const boost::json::value& v,
                                      std::uint64_t& begin, std::uint64_t& end) {
  const auto* entry = v.if_object();
  if (entry == nullptr || entry->size() != 3 || !entry->contains("dtype") ||
      !entry->contains("shape") || !entry->contains("data_offsets")) {
    return fail(model_errc::bad_tensor_entry,
                tensor_named(name) + ": expected exactly the keys dtype, shape and data_offsets");
  }
  tensor_spec t{name, gpu::dtype::f32, {}};
  const auto* dtype_name = entry->at("dtype").if_string();
  if (dtype_name == nullptr)
    return fail(model_errc::bad_tensor_entry, tensor_named(name) + ": dtype is not a string");
  // safetensors spells dtypes in capitals; parse_dtype also takes mws's lower-case names.
  const bool capitals = *dtype_name == "F32" || *dtype_name == "F16" || *dtype_name == "BF16";
  const auto type = capitals ? gpu::parse_dtype(*dtype_name) : std::nullopt;
  if (!type) {
    return fail(model_errc::unsupported_dtype, tensor_named(name) + ": dtype " +
                                                   std::string(*dtype_name) +
                                                   " is not supported (use F32, F16 or BF16)");
  }
  t.type = *type;
  const auto* shape = entry->at("shape").if_array();
  if (shape == nullptr || shape->size() > rank_max) {
    return fail(model_errc::bad_tensor_entry, tensor_named(name) +
                                                  ": shape is not an array of at most " +
                                                  std::to_string(rank_max) + " dimensions");
  }
  std::uint64_t numel = 1;
  for (const auto& d : *shape) {
    const auto dim = as_count(d);
    if (!dim)
      return fail(model_errc::bad_tensor_entry,
                  tensor_named(name) + ": shape holds a non-integer or negative dimension");
    const auto product = checked_mul(numel, *dim);
    if (!product)
      return fail(model_errc::size_overflow,
                  tensor_named(name) + ": shape product overflows 64 bits");
    numel = *product;
    t.shape.push_back(*dim);
  }
  if (!checked_mul(numel, gpu::dtype_size(t.type))) {
    return fail(model_errc::size_overflow, tensor_named(name) + ": byte size overflows 64 bits");
  }
  const auto* offsets = entry->at("data_offsets").if_array();
  const auto b = offsets && offsets->size() == 2 ? as_count((*offsets)[0]) : std::nullopt;
  const auto e = offsets && offsets->size() == 2 ? as_count((*offsets)[1]) : std::nullopt;
  if (!b || !e) {
    return fail(model_errc::bad_tensor_entry,
                tensor_named(name) + ": data_offsets is not [begin, end]");
  }
  if (*e < *b)
    return fail(model_errc::bad_offsets,
                tensor_named(name) + ": data_offsets end before they begin");
  if (*e - *b != t.bytes()) {
    return fail(model_errc::size_mismatch,
                tensor_named(name) + ": shape " + shape_text(t.shape) + " holds " +
                    std::to_string(numel) + " elements of " + std::string(*dtype_name) + " = " +
                    std::to_string(t.bytes()) + " bytes, but data_offsets span " +
                    std::to_string(*e - *b));
  }
  begin = *b;
  end = *e;
  return t;
}

model_result<layout> parse_header(std::string_view text, std::uint64_t data_bytes) {
  boost::json::parse_options options;
  options.max_depth = 8;
  boost::system::error_code ec;
  boost::json::value doc = boost::json::parse(text, ec, {}, options);
  if (ec || !doc.is_object()) {
    return fail(model_errc::bad_header_json,
                "header is not a JSON object" + (ec ? " (" + ec.message() + ")" : std::string()));
  }
  struct placed {
    tensor_spec spec;
    std::uint64_t begin, end;
  };
  std::vector<placed> tensors;
  layout out;
  for (const auto& [key, value] : doc.as_object()) {
    const std::string name(key);
    if (name == "__metadata__") {
      const auto* meta = value.if_object();
      if (meta == nullptr)
        return fail(model_errc::bad_header_json, "__metadata__ is not an object");
      for (const auto& [k, v] : *meta) {
        if (!v.is_string())
          return fail(model_errc::bad_header_json,
                      "__metadata__ value of '" + std::string(k) + "' is not a string");
        out.metadata[std::string(k)] = std::string(v.get_string());
      }
      continue;
    }
    if (name.empty() || name.size() > name_bytes_max) {
      return fail(model_errc::bad_tensor_entry, "a tensor name is empty or longer than " +
                                                    std::to_string(name_bytes_max) + " bytes");
    }
    placed p;
    auto spec = parse_entry(name, value, p.begin, p.end);
    if (!spec) return spec.error();
    p.spec = std::move(*spec);
    tensors.push_back(std::move(p));
  }
  // The data section must be exactly the tensors, back to back, in file order.
  std::stable_sort(tensors.begin(), tensors.end(),
                   [](const placed& a, const placed& b) { return a.begin < b.begin; });
  std::uint64_t expected = 0;
  for (const auto& p : tensors) {
    if (p.begin != expected) {
      return fail(model_errc::bad_offsets,
                  tensor_named(p.spec.name) + ": data begins at " + std::to_string(p.begin) +
                      ", expected " + std::to_string(expected) +
                      " (tensors must be contiguous, without gaps or overlap)");
    }
    if (p.end > data_bytes) {
      return fail(model_errc::bad_offsets,
                  tensor_named(p.spec.name) + ": data ends at " + std::to_string(p.end) +
                      ", past the end of the file's " + std::to_string(data_bytes) + " data bytes");
    }
    expected = p.end;
  }
  if (expected != data_bytes) {
    return fail(model_errc::trailing_bytes,
                std::to_string(data_bytes - expected) + " bytes follow the last tensor");
  }
  std::sort(tensors.begin(), tensors.end(),
            [](const placed& a, const placed& b) { return a.spec.name < b.spec.name; });
  for (auto& p : tensors) {
    out.spec.tensors.push_back(std::move(p.spec));
    out.data_begin.push_back(p.begin);
  }
  return out;
}

// Splits a file's first bytes into the header text, checking its length.
model_result<std::string_view> header_text(std::span<const std::byte> prefix,
                                           std::uint64_t file_bytes, std::uint64_t& header_bytes) {
  if (file_bytes < 8)
    return fail(model_errc::too_short, "file is " + std::to_string(file_bytes) +
                                           " bytes, shorter than the 8-byte header length");
  header_bytes = read_le64(prefix.data());
  if (header_bytes > safetensors_header_bytes_max || header_bytes > file_bytes - 8) {
    return fail(
        model_errc::header_too_large,
        "header length " + std::to_string(header_bytes) + " exceeds " +
            (header_bytes > safetensors_header_bytes_max ? "the 100 MB cap" : "the file size"));
  }
  return std::string_view(reinterpret_cast<const char*>(prefix.data() + 8), prefix.size() - 8);
}

}  // namespace

const boost::system::error_category& model_category() noexcept {
  static const model_error_category category;
  return category;
}

void throw_exception_from_error(const model_error& e, const boost::source_location&) {
  throw std::runtime_error(e.message);
}

std::uint64_t tensor_spec::numel() const noexcept {
  std::uint64_t n = 1;
  for (auto d : shape)
    n *= d;
  return n;
}

std::uint64_t manifest::total_bytes() const noexcept {
  std::uint64_t total = 0;
  for (const auto& t : tensors)
    total += t.bytes();
  return total;
}

std::string manifest::summary() const {
  std::uint64_t params = 0;
  for (const auto& t : tensors)
    params += t.numel();
  std::ostringstream s;
  s << tensors.size() << " tensors, " << params << " parameters, " << total_bytes() << " bytes";
  return s.str();
}

std::string describe_difference(const manifest& ours, const manifest& theirs) {
  auto describe = [](const tensor_spec& t) {
    return "'" + t.name + "' " + std::string(gpu::to_string(t.type)) + " " + shape_text(t.shape);
  };
  std::string counts;
  if (ours.tensors.size() != theirs.tensors.size()) {
    counts = std::to_string(ours.tensors.size()) + " tensors here, " +
             std::to_string(theirs.tensors.size()) + " there; ";
  }
  // Both lists are sorted by name: walk them together to the first difference.
  std::size_t i = 0, j = 0;
  for (; i < ours.tensors.size() && j < theirs.tensors.size(); ++i, ++j) {
    const auto& a = ours.tensors[i];
    const auto& b = theirs.tensors[j];
    if (a.name < b.name) return counts + "tensor " + describe(a) + " only here";
    if (b.name < a.name) return counts + "tensor " + describe(b) + " only there";
    if (!(a == b)) return counts + "tensor " + describe(a) + " here, " + describe(b) + " there";
  }
  if (i < ours.tensors.size()) return counts + "tensor " + describe(ours.tensors[i]) + " only here";
  if (j < theirs.tensors.size()) {
    return counts + "tensor " + describe(theirs.tensors[j]) + " only there";
  }
  return {};
}

void model_file::aligned_free::operator()(std::byte* p) const noexcept {
  std::free(p);
}

model_file::model_file(manifest m) : manifest_(std::move(m)) {
  std::size_t total = 0;
  for (const auto& t : manifest_.tensors) {
    offsets_.push_back(total);
    total += (static_cast<std::size_t>(t.bytes()) + alignment_bytes - 1) / alignment_bytes *
             alignment_bytes;
  }
  auto* p = static_cast<std::byte*>(
      std::aligned_alloc(alignment_bytes, std::max(total, alignment_bytes)));
  if (p == nullptr) throw std::bad_alloc();
  gpu::advise_huge_pages(p, total);
  std::memset(p, 0, std::max(total, alignment_bytes));
  storage_.reset(p);
}

std::span<std::byte> model_file::tensor_bytes(std::size_t i) noexcept {
  return {storage_.get() + offsets_[i], static_cast<std::size_t>(manifest_.tensors[i].bytes())};
}

std::span<const std::byte> model_file::tensor_bytes(std::size_t i) const noexcept {
  return {storage_.get() + offsets_[i], static_cast<std::size_t>(manifest_.tensors[i].bytes())};
}

model_view::model_view(const model_file& m) : spec_(&m.spec()), metadata_(&m.metadata()) {
  for (std::size_t i = 0; i < m.spec().tensors.size(); ++i)
    tensors_.push_back(m.tensor_bytes(i));
}

model_view::model_view(const manifest& spec, std::vector<std::span<const std::byte>> tensors,
                       const std::map<std::string, std::string>& metadata)
    : spec_(&spec), tensors_(std::move(tensors)), metadata_(&metadata) {}

std::string model_view::misfit() const {
  const auto& specs = spec_->tensors;
  if (tensors_.size() != specs.size()) {
    return std::to_string(tensors_.size()) + " tensors given for a manifest of " +
           std::to_string(specs.size());
  }
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (tensors_[i].size() != specs[i].bytes()) {
      return tensor_named(specs[i].name) + ": " + std::to_string(tensors_[i].size()) +
             " bytes given for " + std::to_string(specs[i].bytes());
    }
  }
  return {};
}

model_result<model_file> parse_safetensors(std::span<const std::byte> file) {
  std::uint64_t header_bytes = 0;
  auto text =
      header_text(file.first(std::min<std::size_t>(file.size(), 8)), file.size(), header_bytes);
  if (!text) return text.error();
  const std::string_view header(reinterpret_cast<const char*>(file.data() + 8), header_bytes);
  const auto data = file.subspan(8 + header_bytes);
  auto parsed = parse_header(header, data.size());
  if (!parsed) return parsed.error();
  model_file model(std::move(parsed->spec));
  for (std::size_t i = 0; i < model.spec().tensors.size(); ++i) {
    auto dst = model.tensor_bytes(i);
    std::memcpy(dst.data(), data.data() + parsed->data_begin[i], dst.size());
  }
  model.metadata() = std::move(parsed->metadata);
  return model;
}

model_result<model_file> load_safetensors(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(model_errc::unreadable,
                "cannot open " + path.string() + ": " + std::strerror(errno));
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } close_on_return{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return fail(model_errc::unreadable, "cannot read " + path.string() + ": not a regular file");
  }
  auto read_at = [&](std::byte* dst, std::size_t n, std::uint64_t offset) {
    while (n > 0) {
      const ssize_t got = ::pread(fd, dst, n, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      dst += got;
      n -= static_cast<std::size_t>(got);
      offset += static_cast<std::uint64_t>(got);
    }
    return true;
  };
  const off_t end = ::lseek(fd, 0, SEEK_END);
  if (end < 0)
    return fail(model_errc::unreadable,
                "cannot size " + path.string() + ": " + std::strerror(errno));
  const auto file_bytes = static_cast<std::uint64_t>(end);
  std::byte length[8];
  if (file_bytes >= 8 && !read_at(length, 8, 0))
    return fail(model_errc::unreadable, "cannot read " + path.string());
  std::uint64_t header_bytes = 0;
  auto checked = header_text(std::span<const std::byte>(length, file_bytes >= 8 ? 8 : 0),
                             file_bytes, header_bytes);
  if (!checked) return about(path, checked.error());
  std::string header(header_bytes, '\0');
  if (!read_at(reinterpret_cast<std::byte*>(header.data()), header.size(), 8)) {
    return fail(model_errc::unreadable, "cannot read the header of " + path.string());
  }
  const std::uint64_t data_offset = 8 + header_bytes;
  auto parsed = parse_header(header, file_bytes - data_offset);
  if (!parsed) return about(path, parsed.error());
  model_file model(std::move(parsed->spec));
  for (std::size_t i = 0; i < model.spec().tensors.size(); ++i) {
    auto dst = model.tensor_bytes(i);
    if (!read_at(dst.data(), dst.size(), data_offset + parsed->data_begin[i])) {
      return fail(model_errc::unreadable,
                  path.string() + ": cannot read " + tensor_named(model.spec().tensors[i].name));
    }
  }
  model.metadata() = std::move(parsed->metadata);
  return model;
}

std::string safetensors_prefix(const manifest& spec,
                               const std::map<std::string, std::string>& metadata) {
  boost::json::object header;
  if (!metadata.empty()) {
    boost::json::object meta;
    for (const auto& [k, v] : metadata)
      meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  std::uint64_t offset = 0;
  for (const auto& t : spec.tensors) {
    boost::json::array shape;
    for (auto d : t.shape)
      shape.push_back(d);
    std::string dtype(gpu::to_string(t.type));
    std::transform(dtype.begin(), dtype.end(), dtype.begin(),
                   [](char c) { return static_cast<char>(std::toupper(c)); });
    header[t.name] =
        boost::json::object{{"dtype", dtype},
                            {"shape", std::move(shape)},
                            {"data_offsets", boost::json::array{offset, offset + t.bytes()}}};
    offset += t.bytes();
  }
  std::string text = boost::json::serialize(header);
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (std::size_t i = 0; i < 8; ++i)
    out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return out + text;
}

std::string encode_safetensors(const model_file& model) {
  std::string out = safetensors_prefix(model.spec(), model.metadata());
  out.reserve(out.size() + model.spec().total_bytes());
  for (std::size_t i = 0; i < model.spec().tensors.size(); ++i) {
    const auto b = model.tensor_bytes(i);
    out.append(reinterpret_cast<const char*>(b.data()), b.size());
  }
  return out;
}

model_result<void> save_safetensors(const std::filesystem::path& path, const model_view& model) {
  if (auto misfit = model.misfit(); !misfit.empty()) {
    return fail(model_errc::manifest_mismatch, path.string() + ": " + misfit);
  }
  const std::string prefix = safetensors_prefix(model.spec(), model.metadata());
  std::vector<std::span<const std::byte>> parts = {std::as_bytes(std::span<const char>(prefix))};
  for (const auto t : model.tensors())
    parts.push_back(t);
  if (auto error = detail::write_file_atomically(path, parts); !error.empty()) {
    return fail(model_errc::unwritable, error);
  }
  return {};
}

}  // namespace mws::runtime
