// TensorFlow's own metric registry (tsl::monitoring::CollectionRegistry), read for the Prometheus page.
//
// TF Serving exports every metric of this registry (util/prometheus_exporter.cc); TensorFlow's Python API has
// no reader for it, so svc/servables/tf_registry.py compiles this file against the installed TensorFlow's
// headers and calls it through ctypes. It only collects and flattens: the Prometheus text is rendered in
// Python (svc/metrics.py), in one place with aspired's own TF-form series.
//
// Output: records separated by \x1e, fields by \x1f (those two bytes are replaced by '?' inside names):
//   M <name> <kind: 0 gauge, 1 cumulative> <value type: i(nt64) d(ouble) b(ool) s(tring) h(istogram) p(ercentiles)>
//   P <value> <label count n> <label name> <label value> ... (n pairs)
//     a histogram's value is "<sum>\x1f<bucket count k>\x1f<limit>\x1f<count>..." (k pairs)
// Each M record is followed by the P records of its points.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "xla/tsl/lib/monitoring/collected_metrics.h"
#include "xla/tsl/lib/monitoring/collection_registry.h"

namespace {

using tsl::monitoring::CollectedMetrics;
using tsl::monitoring::CollectionRegistry;
using tsl::monitoring::MetricKind;
using tsl::monitoring::Point;
using tsl::monitoring::ValueType;

constexpr char kRecord = '\x1e';
constexpr char kField = '\x1f';

void Field(std::string* out, const std::string& text) {
  out->push_back(kField);
  for (char c : text) out->push_back(c == kRecord || c == kField ? '?' : c);
}

void Number(std::string* out, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.17g", value);
  Field(out, buffer);
}

char TypeLetter(ValueType type) {
  switch (type) {
    case ValueType::kInt64: return 'i';
    case ValueType::kDouble: return 'd';
    case ValueType::kBool: return 'b';
    case ValueType::kString: return 's';
    case ValueType::kHistogram: return 'h';
    case ValueType::kPercentiles: return 'p';
  }
  return '?';
}

void PointRecord(std::string* out, const Point& point) {
  out->push_back(kRecord);
  out->push_back('P');
  switch (point.value_type) {
    case ValueType::kInt64: Field(out, std::to_string(point.int64_value)); break;
    case ValueType::kDouble: Number(out, point.double_value); break;
    case ValueType::kBool: Field(out, point.bool_value ? "1" : "0"); break;
    case ValueType::kString: Field(out, point.string_value); break;
    case ValueType::kHistogram: {
      const auto& h = point.histogram_value;
      Number(out, h.sum());
      Field(out, std::to_string(h.bucket_size()));
      for (int i = 0; i < h.bucket_size(); ++i) {
        Number(out, i < h.bucket_limit_size() ? h.bucket_limit(i) : 0.0);
        Number(out, h.bucket(i));
      }
      break;
    }
    case ValueType::kPercentiles: Field(out, "0"); break;
  }
  Field(out, std::to_string(point.labels.size()));
  for (const auto& label : point.labels) {
    Field(out, label.name);
    Field(out, label.value);
  }
}

}  // namespace

extern "C" {

// The whole registry, flattened as above; free it with aspired_tf_registry_free.
char* aspired_tf_registry_collect(size_t* size) {
  CollectionRegistry::CollectMetricsOptions options;
  options.collect_metric_descriptors = true;
  const std::unique_ptr<CollectedMetrics> collected = CollectionRegistry::Default()->CollectMetrics(options);
  std::string out;
  for (const auto& [name, descriptor] : collected->metric_descriptor_map) {
    const auto points = collected->point_set_map.find(name);
    if (points == collected->point_set_map.end()) continue;
    out.push_back(kRecord);
    out.push_back('M');
    Field(&out, name);
    Field(&out, descriptor->metric_kind == MetricKind::kCumulative ? "1" : "0");
    Field(&out, std::string(1, TypeLetter(descriptor->value_type)));
    for (const auto& point : points->second->points) PointRecord(&out, *point);
  }
  char* buffer = static_cast<char*>(std::malloc(out.size() + 1));
  if (buffer == nullptr) return nullptr;
  std::memcpy(buffer, out.data(), out.size());
  buffer[out.size()] = '\0';
  *size = out.size();
  return buffer;
}

void aspired_tf_registry_free(char* buffer) { std::free(buffer); }

}  // extern "C"
