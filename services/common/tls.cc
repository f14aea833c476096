#include "services/common/tls.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cpserve::service {
namespace {

absl::Status Missing(const std::string& flag, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, " is required ", why));
}

}  // namespace

absl::StatusOr<std::string> ReadPemFile(const std::string& path, const std::string& flag) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string what =
        absl::StrCat("--", flag, ": cannot open '", path, "': ", strerror(err));
    if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(what);
    if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(what);
    return absl::UnavailableError(what);
  }
  std::string data;
  char buf[8192];
  while (true) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      return absl::UnavailableError(
          absl::StrCat("--", flag, ": cannot read '", path, "': ", strerror(err)));
    }
    data.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  if (!absl::StrContains(data, "-----BEGIN ")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": '", path, "' is not a PEM file (no -----BEGIN line)"));
  }
  return data;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const TlsFiles& files, ClientCertPolicy policy) {
  if (files.cert.empty()) return Missing(files.cert_flag, "for a TLS server");
  if (files.key.empty()) return Missing(files.key_flag, "for a TLS server");
  if (policy == ClientCertPolicy::kRequire && files.ca.empty()) {
    return Missing(files.ca_flag, "to verify client certificates (mutual TLS)");
  }
  absl::StatusOr<std::string> cert = ReadPemFile(files.cert, files.cert_flag);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile(files.key, files.key_flag);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(
      policy == ClientCertPolicy::kRequire
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!files.ca.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile(files.ca, files.ca_flag);
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *std::move(ca);
  }
  options.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const TlsFiles& files) {
  if (files.ca.empty()) return Missing(files.ca_flag, "to verify the server's certificate");
  if (files.cert.empty() != files.key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", files.cert_flag, " and --", files.key_flag, " must be given together"));
  }
  grpc::SslCredentialsOptions options;
  absl::StatusOr<std::string> ca = ReadPemFile(files.ca, files.ca_flag);
  if (!ca.ok()) return ca.status();
  options.pem_root_certs = *std::move(ca);
  if (!files.cert.empty()) {
    absl::StatusOr<std::string> cert = ReadPemFile(files.cert, files.cert_flag);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPemFile(files.key, files.key_flag);
    if (!key.ok()) return key.status();
    options.pem_cert_chain = *std::move(cert);
    options.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsOrInsecure(
    const TlsFiles& files, ClientCertPolicy policy) {
  if (files.empty()) return std::shared_ptr<grpc::ServerCredentials>();  // plaintext
  return MakeServerCredentials(files, policy);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentialsOrInsecure(
    const TlsFiles& files) {
  if (files.empty()) return grpc::InsecureChannelCredentials();
  return MakeChannelCredentials(files);
}

void WarnInsecure(const std::string& who, const std::vector<std::string>& unprotected) {
  if (unprotected.empty()) return;
  const std::string bar(72, '*');
  LOG(WARNING) << bar;
  LOG(WARNING) << "* " << who << ": INSECURE MODE — for local use only. Unprotected:";
  for (const std::string& what : unprotected) LOG(WARNING) << "*   - " << what;
  LOG(WARNING) << bar;
}

}  // namespace cpserve::service
