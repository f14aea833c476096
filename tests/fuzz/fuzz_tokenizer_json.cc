// Fuzzes the tokenizer.json loader (Tokenizer::FromJson) and, when it loads, Encode and
// Decode of fuzzed text. Input layout: tokenizer.json text, a NUL byte (JSON text never
// holds a raw NUL), then one flags byte (bit 0 add_special, bit 1 parse_special, bit 2
// skip_special) and the text to encode (at most 4 KiB used). Without a NUL the whole
// input is the JSON and a fixed text is encoded.
//
// Checks: rejections carry a message; every encoded id is a token (TokenBytes succeeds)
// and Decode of the ids succeeds; Decode of the ids the text bytes spell (as int32s)
// fails only with OutOfRange and only when one is not a token.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "tests/fuzz/fuzz_check.h"
#include "worker/tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* begin = reinterpret_cast<const char*>(data);
  const void* nul = std::memchr(begin, 0, size);
  const size_t json_len = nul ? static_cast<size_t>(static_cast<const char*>(nul) - begin) : size;
  const absl::string_view json(begin, json_len);
  uint8_t flags = 0x3;
  absl::string_view text = "Hello, world! <|begin_of_text|> 12345 \xe4\xbd\xa0\xe5\xa5\xbd";
  if (nul != nullptr) {
    absl::string_view rest(begin + json_len + 1, size - json_len - 1);
    flags = rest.empty() ? 0 : static_cast<uint8_t>(rest[0]);
    text = rest.empty() ? rest : rest.substr(1, 4096);
  }

  absl::StatusOr<cpserve::tokenizer::Tokenizer> tok = cpserve::tokenizer::Tokenizer::FromJson(json);
  if (!tok.ok()) {
    FUZZ_CHECK(!tok.status().message().empty(), "error without a message");
    return 0;
  }
  const bool add_special = flags & 1, parse_special = flags & 2, skip_special = flags & 4;
  const std::vector<int32_t> ids = tok->Encode(text, add_special, parse_special);
  for (int32_t id : ids) {
    FUZZ_CHECK(id >= 0 && id < tok->vocab_size(),
               absl::StrCat("Encode gave id ", id, " outside [0, ", tok->vocab_size(), ")"));
    FUZZ_CHECK(tok->TokenBytes(id).ok(), absl::StrCat("Encode gave id ", id, ", not a token"));
  }
  absl::StatusOr<std::string> decoded = tok->Decode(ids, skip_special);
  FUZZ_CHECK(decoded.ok(), absl::StrCat("Decode of encoded ids: ", decoded.status().ToString()));

  // Arbitrary ids: the text's bytes read as little-endian int32s.
  std::vector<int32_t> raw(text.size() / 4);
  if (!raw.empty()) std::memcpy(raw.data(), text.data(), raw.size() * 4);
  bool all_tokens = true;
  for (int32_t id : raw) all_tokens = all_tokens && tok->TokenBytes(id).ok();
  absl::StatusOr<std::string> raw_decoded = tok->Decode(raw, skip_special);
  if (all_tokens) {
    FUZZ_CHECK(raw_decoded.ok(), raw_decoded.status().ToString());
  } else {
    FUZZ_CHECK(raw_decoded.status().code() == absl::StatusCode::kOutOfRange,
               absl::StrCat("Decode of a non-token: ", raw_decoded.status().ToString()));
  }
  for (int32_t id : raw) {
    if (std::optional<std::string> t = tok->IdToToken(id)) (void)tok->TokenToId(*t);
  }
  return 0;
}
