// embedder.h — the logic of the `embed` stage: token stream in, embedding stream out,
// with length bucketing inside a window and batching under a token budget.
#ifndef MT_EMBEDDER_H
#define MT_EMBEDDER_H
#include "backend.h"

typedef struct {
    int pool;          // MT_POOL_CLS | MT_POOL_MEAN | MT_POOL_MAX | MT_EMBED_POOL_SBERT_CNN_BILSTM
    int normalize;     // L2-normalise pooled vectors
    int tokens;        // write token states instead of pooled vectors
    int batch_tokens;  // real tokens per batch at most
    int batch_size;    // sequences per batch at most
    int window;        // records sorted by length together
    int no_cross;      // skip the joint sequence of pairs (no cls_ab)
    size_t max_memory; // the memory plan's cap in bytes (0: the backend's free memory only)
} mt_embed_options;

// The trained sentence model of a pcgrad-train checkpoint (DIR/heads.safetensors, kind
// sbert-cnn-bilstm) over the encoder's packed token states, without dropout: emb_a / emb_b
// of its width D (header emb_dim), as pcgrad-train's evaluation computes them.
#define MT_EMBED_POOL_SBERT_CNN_BILSTM 16

mt_embed_options mt_embed_defaults(void);
int mt_embed_parse_pool(const char *s);  // dies on an unknown mode
const char *mt_embed_pool_name(int pool);

typedef struct mt_embedder mt_embedder;
// Loads the model in dir on backend be (dies with a clear message on a bad directory; with
// the sbert-cnn-bilstm pool, also when dir/heads.safetensors is missing or holds another
// sentence model). Plans the run's memory first (lib/memplan.h) and dies, before allocating
// anything, when it does not fit the backend or o->max_memory.
mt_embedder *mt_embedder_open(const char *dir, const mt_backend *be, int threads,
                              const mt_embed_options *o);
// Reads the token stream at in ("-" stdin), writes the embedding stream at out ("-" stdout).
void mt_embed_stream(mt_embedder *e, const char *in, const char *out);
void mt_embedder_close(mt_embedder *e);

#endif
