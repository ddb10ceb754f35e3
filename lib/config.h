// config.h — BERT hyper-parameters from a Hugging Face config.json.
#ifndef MT_CONFIG_H
#define MT_CONFIG_H
#include <stddef.h>

typedef struct {
    int vocab_size;               // V
    int hidden_size;              // C
    int num_hidden_layers;        // L
    int num_attention_heads;      // NH (divides C)
    int intermediate_size;        // F (the feed-forward width, 4C in BERT-base)
    int max_position_embeddings;  // the longest sequence the model accepts
    int type_vocab_size;          // number of token types (segments)
    int pad_token_id;
    float layer_norm_eps;
} mt_bert_config;

// Reads and checks path (a config.json). Returns 0, or -1 with a message naming the file
// and the field in err. Requires hidden_act "gelu" (the erf form) and absolute positions.
#define MT_CONFIG_MAX_BYTES ((size_t)16 << 20)  // a config.json larger than this is refused
int mt_config_load(mt_bert_config *cfg, const char *path, char *err, size_t errlen);
// The same on text already in memory; what names it in messages.
int mt_config_parse(mt_bert_config *cfg, const char *text, size_t len, const char *what,
                    char *err, size_t errlen);

#endif
