#include "worker/tokenizer/normalizer.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"

#ifdef CPSERVE_TOKENIZER_HAVE_ICU
#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#endif

namespace cpserve::tokenizer {
namespace {

using json = nlohmann::json;

absl::Status Parse(const json& value, const std::string& where, bool* nfc) {
  if (value.is_null()) return absl::OkStatus();
  if (!value.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(where, " must be an object or null"));
  }
  auto type_it = value.find("type");
  if (type_it == value.end() || !type_it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".type missing or not a string"));
  }
  const std::string& type = type_it->get_ref<const std::string&>();
  if (type == "Sequence") {
    auto it = value.find("normalizers");
    if (it == value.end() || !it->is_array()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ".normalizers missing or not an array"));
    }
    for (size_t i = 0; i < it->size(); ++i) {
      absl::Status s = Parse((*it)[i], absl::StrCat(where, ".normalizers[", i, "]"), nfc);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type == "NFC") {
#ifdef CPSERVE_TOKENIZER_HAVE_ICU
    *nfc = true;
    return absl::OkStatus();
#else
    return absl::UnimplementedError(
        absl::StrCat(where, ": normalizer 'NFC' needs ICU, which this build lacks"));
#endif
  }
  return absl::UnimplementedError(
      absl::StrCat(where, ": normalizer type '", type, "' is not supported"));
}

}  // namespace

absl::StatusOr<Normalizer> Normalizer::FromJson(const json& value) {
  Normalizer n;
  absl::Status s = Parse(value, "normalizer", &n.nfc_);
  if (!s.ok()) return s;
  return n;
}

std::string Normalizer::Normalize(absl::string_view text) const {
#ifdef CPSERVE_TOKENIZER_HAVE_ICU
  if (nfc_) {
    UErrorCode status = U_ZERO_ERROR;
    const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(status);
    if (U_SUCCESS(status)) {
      icu::UnicodeString in = icu::UnicodeString::fromUTF8(
          icu::StringPiece(text.data(), static_cast<int32_t>(text.size())));
      // Most text is already NFC; skip the rewrite then.
      if (nfc->isNormalized(in, status) && U_SUCCESS(status)) return std::string(text);
      status = U_ZERO_ERROR;
      icu::UnicodeString out = nfc->normalize(in, status);
      if (U_SUCCESS(status)) {
        std::string result;
        out.toUTF8String(result);
        return result;
      }
    }
    LOG(WARNING) << "ICU NFC normalization failed: " << u_errorName(status);
  }
#endif
  return std::string(text);
}

}  // namespace cpserve::tokenizer
