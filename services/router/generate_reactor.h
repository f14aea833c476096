// One Generate stream at the router (DESIGN §5–6): tokenize, validate, admit, route,
// then either
//   local:         DecodePool.Decode (the decode pool prefills), or
//   disaggregated: DecodePool.Reserve -> PrefillPool.Prefill (first token streamed at
//                  once) -> DecodePool.Decode(transfer_id, first_token);
// a failed prefill is retried once on another prefill pool, then falls back to local.
// Token ids are detokenized incrementally; stop strings cut the text and end the
// request. Client cancellation / deadline cancels every downstream call and sends
// Cancel to the pools so that they free the request's KV.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/status.h"
#include "cpserve/v1/generation.pb.h"

namespace cpserve::router {

class RouterCore;

// Creates the reactor of one Generate call (it deletes itself when done). `client` is the
// caller's identity for the per-client stream limit (RouterCore::Authenticate).
grpc::ServerWriteReactor<v1::GenerateResponse>* StartGenerate(RouterCore* core,
                                                              grpc::CallbackServerContext* ctx,
                                                              const v1::GenerateRequest* req,
                                                              std::string client);

// A reactor that ends the call at once with `status` (e.g. UNAUTHENTICATED).
grpc::ServerWriteReactor<v1::GenerateResponse>* RejectGenerate(const absl::Status& status);

}  // namespace cpserve::router
