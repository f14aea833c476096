// Transport security of the services: gRPC SSL credentials built from PEM files named by
// flags, and the loud warning printed when a service runs without them.
//
//   TlsFiles files{.cert = "server.pem", .key = "server.key", .ca = "ca.pem"};
//   absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> creds =
//       MakeServerCredentials(files, ClientCertPolicy::kRequire);   // mTLS
//   absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ch =
//       MakeChannelCredentials({.ca = "ca.pem"});                   // TLS client
//
// Every error names the flag and the file (NOT_FOUND for a missing file,
// PERMISSION_DENIED for an unreadable one, INVALID_ARGUMENT for a bad combination).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace grpc {
class ChannelCredentials;
class ServerCredentials;
}  // namespace grpc

namespace cpserve::service {

// PEM files of one side of a connection. `*_flag` name the flags the paths came from, for
// error messages (e.g. "--tls_cert").
struct TlsFiles {
  std::string cert;  // certificate chain presented to the peer
  std::string key;   // its private key
  std::string ca;    // CA bundle the peer's certificate must chain to
  std::string cert_flag = "cert";
  std::string key_flag = "key";
  std::string ca_flag = "ca";

  bool empty() const { return cert.empty() && key.empty() && ca.empty(); }
};

enum class ClientCertPolicy {
  kNone,     // plain TLS: clients present no certificate
  kRequire,  // mutual TLS: clients must present a certificate that chains to `ca`
};

// Reads a whole file; NOT_FOUND / PERMISSION_DENIED / UNAVAILABLE (read error) and an
// INVALID_ARGUMENT for an empty file, each naming `flag` and `path`.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& flag);

// Server side: `cert` and `key` are required; with kRequire `ca` is too.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files, ClientCertPolicy policy);

// Client side: trusts `ca` (required); presents `cert`/`key` when both are given (mTLS).
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files);

// Server credentials from `files`, or null (plaintext: ServerOptions::credentials's
// default) when `files` is empty.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsOrInsecure(
    const TlsFiles& files, ClientCertPolicy policy);
// Channel credentials from `files`, or insecure ones when `files` is empty.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsOrInsecure(
    const TlsFiles& files);

// LOG(WARNING) banner listing what runs without protection (nothing when `unprotected` is
// empty), e.g. WarnInsecure("router", {"public API: plaintext (no --tls_cert)"}).
void WarnInsecure(const std::string& who, const std::vector<std::string>& unprotected);

}  // namespace cpserve::service
