#include <string>

#include "cpserve/v1/generation.pb.h"
#include "cpserve/v1/kv_transfer.pb.h"
#include "cpserve/v1/pool.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace cpserve::v1 {
namespace {

using google::protobuf::util::MessageDifferencer;

TEST(ProtoRoundTripTest, GenerateRequestSurvivesBinaryAndJson) {
  GenerateRequest req;
  req.mutable_prompt()->set_text("héllo, wörld");
  req.set_request_id("r-1");
  SamplingParams* s = req.mutable_sampling();
  s->set_max_tokens(32);
  s->set_temperature(0.7f);
  s->set_top_k(40);
  s->set_top_p(0.9f);
  s->set_seed(1234567890123ULL);
  s->add_stop_token_ids(2);
  s->add_stop("\n\n");

  std::string wire;
  ASSERT_TRUE(req.SerializeToString(&wire));
  GenerateRequest back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_TRUE(MessageDifferencer::Equals(req, back));
  EXPECT_TRUE(back.sampling().has_seed());
  EXPECT_FALSE(back.has_stream_text());  // optional: unset stays unset
  EXPECT_EQ(back.prompt().kind_case(), Prompt::kText);

  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(req, &json).ok());
  GenerateRequest from_json;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &from_json).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(req, from_json)) << json;
}

TEST(ProtoRoundTripTest, TokenPromptAndResponse) {
  GenerateRequest req;
  for (int i = 0; i < 1000; ++i) req.mutable_prompt()->mutable_token_ids()->add_ids(i * 7 % 513);
  GenerateRequest back;
  ASSERT_TRUE(back.ParseFromString(req.SerializeAsString()));
  ASSERT_EQ(back.prompt().token_ids().ids_size(), 1000);
  EXPECT_EQ(back.prompt().token_ids().ids(999), 999 * 7 % 513);

  GenerateResponse resp;
  resp.add_token_ids(5);
  resp.set_text("\xe2\x82\xac");  // one whole UTF-8 character
  resp.set_finish_reason(FINISH_REASON_STOP_STRING);
  resp.mutable_timings()->set_time_to_first_token_us(1234);
  resp.mutable_timings()->set_path("disaggregated");
  GenerateResponse resp_back;
  ASSERT_TRUE(resp_back.ParseFromString(resp.SerializeAsString()));
  EXPECT_TRUE(MessageDifferencer::Equals(resp, resp_back));
}

TEST(ProtoRoundTripTest, KvTransferTargetKeepsOpaqueBytes) {
  KvTransferTarget t;
  t.set_transfer_id("xfer-9");
  t.mutable_layout()->set_world_size(2);
  t.mutable_layout()->set_block_size(16);
  t.mutable_layout()->set_dtype("bfloat16");
  KvDestination* d = t.add_destinations();
  std::string addr(300, '\0');
  for (size_t i = 0; i < addr.size(); ++i) addr[i] = static_cast<char>(i * 31);
  d->set_worker_address(addr);
  d->set_remote_base(0xffff800000001000ULL);
  d->set_rkey(std::string("\x00\x01\xff", 3));
  d->add_block_ids(3);
  d->add_block_ids(17);
  KvTransferTarget back;
  ASSERT_TRUE(back.ParseFromString(t.SerializeAsString()));
  EXPECT_TRUE(MessageDifferencer::Equals(t, back));
  EXPECT_EQ(back.destinations(0).worker_address(), addr);
  EXPECT_EQ(back.destinations(0).remote_base(), 0xffff800000001000ULL);
}

TEST(ProtoRoundTripTest, UnknownFieldsArePreservedForForwardCompatibility) {
  // A newer peer's extra field must survive a hop through an older binary.
  HeartbeatRequest hb;
  hb.set_registration_id("reg");
  hb.mutable_load()->set_free_kv_blocks(42);
  std::string wire = hb.SerializeAsString();
  wire.push_back(static_cast<char>((99 << 3) | 0));  // field 99, varint
  wire.push_back(7);
  HeartbeatRequest parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  EXPECT_EQ(parsed.load().free_kv_blocks(), 42);
  EXPECT_EQ(parsed.SerializeAsString(), wire);
}

}  // namespace
}  // namespace cpserve::v1
