#include "api/http_payloads.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace drover::api::http {
namespace {

namespace pb = google::protobuf;
using Json = nlohmann::ordered_json;

// The field a JSON key names: its proto name or its lowerCamelCase JSON name.
const pb::FieldDescriptor* FieldOf(const pb::Descriptor* d, const std::string& key) {
  if (const pb::FieldDescriptor* f = d->FindFieldByName(key)) return f;
  return d->FindFieldByCamelcaseName(key);
}

// F_json when `f` is a payload field (bytes with a bool flag beside it), else null.
const pb::FieldDescriptor* FlagOf(const pb::FieldDescriptor* f) {
  if (f == nullptr || f->type() != pb::FieldDescriptor::TYPE_BYTES) return nullptr;
  const pb::FieldDescriptor* flag = f->containing_type()->FindFieldByName(f->name() + "_json");
  if (flag == nullptr || flag->type() != pb::FieldDescriptor::TYPE_BOOL) return nullptr;
  return flag;
}

// The key under which `obj` holds field `f`, if any.
const std::string* KeyOf(const Json& obj, const pb::FieldDescriptor* f) {
  for (const std::string* k : {&f->name(), &f->json_name()}) {
    if (obj.contains(*k)) return k;
  }
  return nullptr;
}

bool FlagSet(const Json& obj, const pb::FieldDescriptor* flag) {
  const std::string* k = KeyOf(obj, flag);
  return k != nullptr && obj.at(*k).is_boolean() && obj.at(*k).get<bool>();
}

std::string Join(const std::string& path, const std::string& name) {
  return path.empty() ? name : absl::StrCat(path, ".", name);
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

std::string Encode(const Json& v) { return absl::Base64Escape(Dump(v)); }

absl::Status In(Json& obj, const pb::Descriptor* d, const std::string& path) {
  if (!obj.is_object()) return absl::OkStatus();  // the protobuf parser refuses it
  // F_bytes: the binary form under its own name, renamed to F (base64, as protobuf reads it).
  std::vector<std::string> keys;
  for (auto it = obj.begin(); it != obj.end(); ++it) keys.push_back(it.key());
  for (const std::string& key : keys) {
    if (FieldOf(d, key) != nullptr) continue;
    std::string base;
    if (absl::EndsWith(key, "_bytes")) {
      base = key.substr(0, key.size() - 6);
    } else if (absl::EndsWith(key, "Bytes")) {
      base = key.substr(0, key.size() - 5);
    } else {
      continue;
    }
    const pb::FieldDescriptor* f = FieldOf(d, base);
    const pb::FieldDescriptor* flag = FlagOf(f);
    if (flag == nullptr) continue;  // unknown: the protobuf parser names it
    const std::string where = Join(path, key);
    if (KeyOf(obj, f) != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " and ", Join(path, f->name()), ": give one, not both"));
    }
    if (FlagSet(obj, flag)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": binary data cannot be ", flag->name(), "; drop one of them"));
    }
    const Json& v = obj.at(key);
    const bool ok = f->is_repeated()
                        ? v.is_array() && std::all_of(v.begin(), v.end(),
                                                      [](const Json& e) { return e.is_string(); })
                        : v.is_string();
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, f->is_repeated() ? ": must be a list of base64 strings"
                                               : ": must be base64 text"));
    }
    obj[f->name()] = v;
    obj.erase(key);
  }
  std::vector<std::string> flags;  // set after the walk: inserting would move the members
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const pb::FieldDescriptor* f = FieldOf(d, it.key());
    if (f == nullptr) continue;
    Json& v = it.value();
    if (const pb::FieldDescriptor* flag = FlagOf(f)) {
      bool json = FlagSet(obj, flag);
      if (f->is_repeated()) {
        if (!v.is_array()) continue;
        for (const Json& e : v) json = json || !e.is_string();
        if (!json) continue;
        for (Json& e : v) e = Encode(e);
      } else {
        if (v.is_null()) continue;
        if (!json && v.is_string()) {
          std::string raw;
          const std::string& text = v.get_ref<const std::string&>();
          if (!absl::Base64Unescape(text, &raw) && !absl::WebSafeBase64Unescape(text, &raw)) {
            return absl::InvalidArgumentError(absl::StrCat(
                Join(path, f->name()),
                ": a string here is base64 bytes (the form from before "
                "JSON payloads) and this one is not base64; for a JSON string add \"",
                flag->name(), "\": true, for binary data send base64 as ", f->name(), "_bytes"));
          }
          continue;
        }
        v = Encode(v);
      }
      flags.push_back(flag->name());
      continue;
    }
    if (f->type() != pb::FieldDescriptor::TYPE_MESSAGE) continue;
    const pb::Descriptor* sub = f->message_type();
    const std::string where = Join(path, f->name());
    if (f->is_map()) {
      const pb::FieldDescriptor* value = sub->map_value();
      if (value->type() != pb::FieldDescriptor::TYPE_MESSAGE || !v.is_object()) continue;
      for (auto e = v.begin(); e != v.end(); ++e) {
        if (absl::Status st =
                In(e.value(), value->message_type(), absl::StrCat(where, "[", e.key(), "]"));
            !st.ok()) {
          return st;
        }
      }
    } else if (f->is_repeated()) {
      if (!v.is_array()) continue;
      for (size_t i = 0; i < v.size(); ++i) {
        if (absl::Status st = In(v[i], sub, absl::StrCat(where, "[", i, "]")); !st.ok()) return st;
      }
    } else if (absl::Status st = In(v, sub, where); !st.ok()) {
      return st;
    }
  }
  for (const std::string& flag : flags) {
    if (const pb::FieldDescriptor* fd = d->FindFieldByName(flag); fd != nullptr) {
      if (const std::string* k = KeyOf(obj, fd); k != nullptr && *k != flag) obj.erase(*k);
    }
    obj[flag] = true;
  }
  return absl::OkStatus();
}

// base64 text of JSON back to the value; anything else is left as it was.
void Decode(Json& v) {
  if (!v.is_string()) return;
  std::string raw;
  if (!absl::Base64Unescape(v.get_ref<const std::string&>(), &raw)) return;
  Json parsed = Json::parse(raw, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_discarded()) v = std::move(parsed);
}

void Out(Json& obj, const pb::Descriptor* d) {
  if (!obj.is_object()) return;
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    const pb::FieldDescriptor* f = FieldOf(d, it.key());
    if (f == nullptr) continue;
    Json& v = it.value();
    if (const pb::FieldDescriptor* flag = FlagOf(f)) {
      if (!FlagSet(obj, flag)) continue;
      if (f->is_repeated() && v.is_array()) {
        for (Json& e : v) Decode(e);
      } else {
        Decode(v);
      }
      continue;
    }
    if (f->type() != pb::FieldDescriptor::TYPE_MESSAGE) continue;
    const pb::Descriptor* sub = f->message_type();
    if (f->is_map()) {
      const pb::FieldDescriptor* value = sub->map_value();
      if (value->type() != pb::FieldDescriptor::TYPE_MESSAGE || !v.is_object()) continue;
      for (auto e = v.begin(); e != v.end(); ++e) Out(e.value(), value->message_type());
    } else if (f->is_repeated()) {
      if (!v.is_array()) continue;
      for (Json& e : v) Out(e, sub);
    } else {
      Out(v, sub);
    }
  }
}

}  // namespace

absl::StatusOr<std::string> PayloadsIn(absl::string_view body, const pb::Descriptor* d) {
  Json j = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::string(body);
  if (absl::Status st = In(j, d, ""); !st.ok()) return st;
  return Dump(j);
}

// Whether `json` has a key ending in "_json" set to true.
bool AnyFlagSet(absl::string_view json) {
  for (size_t at = json.find("_json\""); at != absl::string_view::npos;
       at = json.find("_json\"", at + 1)) {
    absl::string_view rest = absl::StripLeadingAsciiWhitespace(json.substr(at + 6));
    if (!absl::ConsumePrefix(&rest, ":")) continue;
    if (absl::StartsWith(absl::StripLeadingAsciiWhitespace(rest), "true")) return true;
  }
  return false;
}

std::string PayloadsOut(std::string json, const pb::Descriptor* d, int indent) {
  // Most answers carry no JSON payload: skip the second parse for them.
  if (!AnyFlagSet(json)) return json;
  Json j = Json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return json;
  Out(j, d);
  return j.dump(indent, ' ', false, Json::error_handler_t::replace);
}

}  // namespace drover::api::http
