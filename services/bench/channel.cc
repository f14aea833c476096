#include "services/bench/channel.h"

#include "absl/status/status.h"

namespace cpserve::bench {

absl::StatusOr<std::vector<std::shared_ptr<grpc::Channel>>> MakeChannels(
    const ConnectionOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> creds =
      service::ChannelCredentialsOrInsecure(options.tls);
  if (!creds.ok()) return creds.status();
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < std::max(1, options.num_channels); ++i) {
    grpc::ChannelArguments args;
    // A distinct argument per channel keeps gRPC from sharing one subchannel (connection).
    args.SetInt("cpserve.bench.channel_index", i);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetMaxReceiveMessageSize(-1);
    channels.push_back(grpc::CreateCustomChannel(options.address, *creds, args));
  }
  return channels;
}

void ApplyCallCredentials(const ConnectionOptions& options, grpc::ClientContext& ctx) {
  if (!options.token.empty()) ctx.AddMetadata("authorization", "Bearer " + options.token);
}

}  // namespace cpserve::bench
