// test_config.c — BERT hyper-parameters from config.json: good files and nonsense.
#include <string.h>

#include "check.h"
#include "config.h"

static char err[512];

#define GOOD "\"vocab_size\": 30522, \"hidden_size\": 384, \"num_hidden_layers\": 6, " \
             "\"num_attention_heads\": 12, \"intermediate_size\": 1536"

static int rejects(const char *json, const char *want) {
    mt_bert_config c;
    if (mt_config_parse(&c, json, strlen(json), "cfg.json", err, sizeof err) == 0) {
        printf("# accepted: %s\n", json);
        return 0;
    }
    if (!strstr(err, want) || !strstr(err, "cfg.json")) { printf("# message '%s' lacks '%s'\n", err, want); return 0; }
    return 1;
}

TEST(reads_fields_and_defaults) {
    const char *j = "{" GOOD ", \"layer_norm_eps\": 1e-12, \"hidden_act\": \"gelu\", \"max_position_embeddings\": 128,"
                    " \"type_vocab_size\": 2, \"pad_token_id\": 0, \"architectures\": [\"BertModel\"]}";
    mt_bert_config c;
    int rc = mt_config_parse(&c, j, strlen(j), "cfg.json", err, sizeof err);
    CHECK(rc == 0);
    CHECK(c.vocab_size == 30522 && c.hidden_size == 384 && c.num_hidden_layers == 6);
    CHECK(c.num_attention_heads == 12 && c.intermediate_size == 1536 && c.max_position_embeddings == 128);
    CHECK(c.type_vocab_size == 2 && c.pad_token_id == 0);
    CHECK_NEAR(c.layer_norm_eps, 1e-12, 1e-18);
    j = "{" GOOD "}";
    rc = mt_config_parse(&c, j, strlen(j), "cfg.json", err, sizeof err);
    CHECK(rc == 0 && c.max_position_embeddings == 512 && c.type_vocab_size == 2);
}

TEST(reads_the_default_model_config) {
    mt_bert_config c;
    int rc = mt_config_load(&c, "models/all-MiniLM-L6-v2/config.json", err, sizeof err);
    if (rc) printf("# %s\n", err);
    CHECK(rc == 0 && c.hidden_size == 384 && c.num_hidden_layers == 6 && c.vocab_size == 30522);
    CHECK(mt_config_load(&c, "models/none/config.json", err, sizeof err) != 0 && strstr(err, "cannot open"));
}

TEST(rejects_nonsense) {
    CHECK(rejects("{\"hidden_size\": 384}", "missing \"vocab_size\""));
    CHECK(rejects("[1]", "not a JSON object"));
    CHECK(rejects("{" GOOD ",}", "not valid JSON"));
    CHECK(rejects("{\"vocab_size\": 30522, \"hidden_size\": 384, \"num_hidden_layers\": 6, "
                  "\"num_attention_heads\": 5, \"intermediate_size\": 1536}", "does not divide hidden_size"));
    CHECK(rejects("{\"vocab_size\": 30522, \"hidden_size\": -384, \"num_hidden_layers\": 6, "
                  "\"num_attention_heads\": 12, \"intermediate_size\": 1536}", "\"hidden_size\" must be an integer"));
    CHECK(rejects("{\"vocab_size\": 30522, \"hidden_size\": 384.5, \"num_hidden_layers\": 6, "
                  "\"num_attention_heads\": 12, \"intermediate_size\": 1536}", "\"hidden_size\" must be an integer"));
    CHECK(rejects("{\"vocab_size\": \"big\", \"hidden_size\": 384, \"num_hidden_layers\": 6, "
                  "\"num_attention_heads\": 12, \"intermediate_size\": 1536}", "\"vocab_size\" must be"));
    CHECK(rejects("{" GOOD ", \"hidden_act\": \"relu\"}", "\"hidden_act\" must be \"gelu\""));
    CHECK(rejects("{" GOOD ", \"hidden_act\": \"gelu_new\"}", "\"hidden_act\" must be \"gelu\""));
    CHECK(rejects("{" GOOD ", \"layer_norm_eps\": -1}", "layer_norm_eps"));
    CHECK(rejects("{" GOOD ", \"pad_token_id\": 40000}", "pad_token_id"));
    CHECK(rejects("{" GOOD ", \"position_embedding_type\": \"relative_key\"}", "position_embedding_type"));
    CHECK(rejects("{" GOOD ", \"max_position_embeddings\": 0}", "max_position_embeddings"));
}

int main(void) {
    RUN(reads_fields_and_defaults);
    RUN(reads_the_default_model_config);
    RUN(rejects_nonsense);
    return check_summary();
}
