// JSON payloads over HTTP (docs/payloads.md). In protobuf's JSON mapping a `bytes` field is
// base64 text; drover's HTTP API instead carries a payload, result, checkpoint, message body
// or map-reduce item as the JSON value itself when its `<field>_json` flag is set:
//
//   request  {"type": "x", "payload": {"doc": 1}}   -> payload = '{"doc":1}', payload_json
//   answer   {"payload": {"doc": 1}, "payload_json": true, ...}
//
// The rule, for every bytes field F of a message that has a bool field F_json:
//   in:  F given as anything but a string (object, array, number, bool) is JSON; so is a
//        string when F_json is true. A string without F_json is base64 bytes, as before
//        JSON payloads existed, so old requests keep their meaning. F_bytes is the explicit
//        binary form (base64). Repeated F (items): JSON when F_json is true or any item is
//        not a string.
//   out: F whose F_json is true is written as its JSON value; other bytes stay base64.
// The walk follows the message's descriptor, so a label or map key named "payload" is not
// touched.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace drover::api::http {

// `body` with its JSON payloads turned into protobuf's JSON mapping (base64 + F_json), ready
// for JsonStringToMessage into a message of type `d`. A body that is not JSON is returned
// unchanged (the protobuf parser then says what is wrong with it).
absl::StatusOr<std::string> PayloadsIn(absl::string_view body,
                                       const google::protobuf::Descriptor* d);

// `json` (MessageToJsonString of a message of type `d`) with every flagged payload written as
// its JSON value; re-indented by `indent` spaces when it changed (-1: compact).
std::string PayloadsOut(std::string json, const google::protobuf::Descriptor* d, int indent = -1);

}  // namespace drover::api::http
