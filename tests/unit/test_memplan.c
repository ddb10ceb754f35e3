// test_memplan.c — the memory plan's arithmetic against sizes worked out by hand for
// all-MiniLM-L6-v2's config (V 30522, C 384, 6 layers, 12 heads, F 1536, 512 positions, 2 types),
// and the size parser. Every arena buffer is rounded up to 64 bytes.
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bert.h"
#include "check.h"
#include "memplan.h"
#include "workspace.h"

static const mt_bert_config MINILM = {30522, 384, 6, 12, 1536, 512, 2, 0, 1e-12f};

static size_t item(const mt_mem_plan *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (!strcmp(p->item[i].name, name)) return p->item[i].bytes;
    return 0;
}

TEST(minilm_parameters) {
    // embeddings 30522*384 + 512*384 + 2*384 + 2*384 = 11918592; a layer 4C^2 + 2FC + 9C + F =
    // 1774464 (x6 = 10646784); the pooler C^2 + C = 147840
    CHECK(mt_bert_count_params(&MINILM, 0) == 11918592u + 10646784u);
    CHECK(mt_bert_count_params(&MINILM, 1) == 22713216u);
}

// 64 tokens, 4 sequences, longest 32: N*C floats = 98304 bytes, N*F = 393216, [N] = 256.
TEST(minilm_inference_plan_on_the_cpu) {
    mt_mem_plan p;
    mt_mem_plan_encoder(&p, &MINILM, mt_backend_cpu(), &(mt_mem_run){64, 4, 32, 0, 0, 0, 0, 0, 0});
    // emb, x, atty, res1, ln1 (5 x 98304) + qkv 294912 + fch 393216 (GELU in place, res2 = res1)
    // + 6 LayerNorm statistics and ids/types/pos (9 x 256) + cls, pooled (2 x 6144)
    // + offsets (20 -> 64) + att_offsets (32 -> 64)
    size_t acts = 5 * 98304 + 294912 + 393216 + 9 * 256 + 2 * 6144 + 64 + 64;
    CHECK(acts == 1194368);
    CHECK(item(&p, "parameters") == 22713216u * 4);
    CHECK(item(&p, "activations") == acts);
    CHECK(p.n == 2);  // the CPU reserves no workspaces
    CHECK(p.total == 22713216u * 4 + acts);
}

TEST(minilm_training_plan_on_a_device_backend) {
    mt_mem_plan p;
    mt_mem_plan_encoder(&p, &MINILM, mt_backend_cpu_staged(), &(mt_mem_run){64, 4, 32, 1, 1, 3, 0, 0, 0});
    size_t P = 22713216u * 4;
    // every layer kept: emb + 7 x (layer inputs and the output) + 6 x (qkv, atty, res1, ln1,
    // fch, fch_gelu, res2) + probabilities 6 x NH x N x 32 floats + 2 + 24 statistics
    size_t acts = 98304 + 7 * 98304 + 6 * (294912 + 4 * 98304 + 2 * 393216) + 6 * 12 * 64 * 32 * 4 + 26 * 256 +
                  2 * 6144 + 3 * 256 + 64 + 64;
    CHECK(acts == 10243456);
    CHECK(item(&p, "activations") == acts);
    CHECK(item(&p, "gradients") == P);
    CHECK(item(&p, "AdamW moments") == 2 * P);
    CHECK(item(&p, "PCGrad task gradients") == 3 * P);
    // dxa dropped dropped2 g2 datty, dqkv, dgelu dfch, dxb
    CHECK(item(&p, "activation gradients") == 6 * 98304 + 294912 + 2 * 393216);
    CHECK(item(&p, "dhidden") == 98304);
    // padded heads: 4 sequences x 32 x C floats; scores 4 x 12 x 32 x 32 floats (x2: backward)
    CHECK(item(&p, "attention Q") == 196608 && item(&p, "attention O") == 196608);
    CHECK(item(&p, "attention scores") == 196608 && item(&p, "attention score gradients") == 196608);
    // scratch: gram of 16 buffers over the parameters, 2773 blocks of 8192: (256 + 136 x 2773) doubles
    CHECK(item(&p, "backward scratch") == (256 + 136 * 2773) * 8);
    size_t ws = 4 * 196608 + 2 * 196608 + (256 + 136 * 2773) * 8;
    CHECK(p.total == P * 7 + acts + 1671168 + 98304 + ws);
}

// The padded bound: B sequences whose longest is Lmax hold >= Lmax + B - 1 tokens.
TEST(padded_attention_is_bounded_by_the_tokens) {
    size_t w[MT_WS_COUNT];
    mt_workspace_shape s = {100, 10, 95, 384, 12, 1536, 0, 0, 0, 0};
    mt_workspace_generic(&s, w);
    size_t best = 0;  // B = 1..6: L = 95 (B <= 6), then 100 - B + 1
    for (int B = 1; B <= 10; B++) {
        int L = 100 - B + 1 < 95 ? 100 - B + 1 : 95;
        size_t sc = (size_t)B * 12 * L * L * 4;
        best = sc > best ? sc : best;
    }
    CHECK(w[MT_WS_ATT_S] == best && w[MT_WS_ATT_DS] == 0 && w[MT_WS_SCRATCH] == 0);
}

// embed's batcher keeps sequences x longest within its token budget (max_padded): at 4096 tokens
// and 512 positions the worst batch is 8 sequences of 512, not the 64 of 512 the tokens alone
// allow (each of 64 sequences of 512 tokens holds >= 512 + 63 tokens <= 4096).
TEST(embed_plans_attention_by_sequences_x_longest) {
    mt_mem_plan p;
    const mt_backend *be = mt_backend_cpu_staged();
    mt_mem_plan_encoder(&p, &MINILM, be, &(mt_mem_run){4096, 64, 512, 0, 0, 0, 0, 4096, 0});
    CHECK(item(&p, "attention scores") == (size_t)8 * 12 * 512 * 512 * 4);  // 96 MiB
    CHECK(item(&p, "attention Q") == (size_t)4096 * 384 * 4);
    mt_mem_plan_encoder(&p, &MINILM, be, &(mt_mem_run){4096, 64, 512, 0, 0, 0, 0, 0, 0});
    CHECK(item(&p, "attention scores") == (size_t)64 * 12 * 512 * 512 * 4);  // 768 MiB
    CHECK(item(&p, "attention Q") == (size_t)64 * 512 * 384 * 4);
    // the bound cuts L where it is tighter than the tokens: B = 9 gets 4096 / 9 = 455
    size_t w[MT_WS_COUNT];
    mt_workspace_generic(&(mt_workspace_shape){4096, 9, 512, 384, 12, 1536, 0, 0, 0, 4096}, w);
    CHECK(w[MT_WS_ATT_S] == (size_t)8 * 12 * 512 * 512 * 4);
    mt_workspace_generic(&(mt_workspace_shape){4096, 9, 455, 384, 12, 1536, 0, 0, 0, 4096}, w);
    CHECK(w[MT_WS_ATT_S] == (size_t)9 * 12 * 455 * 455 * 4);
}

// The gram scratch holds the largest gram call of the run: a sentence model's segment larger
// than the encoder (30M floats > MiniLM's 22.7M) sizes it; a smaller one leaves the encoder's.
TEST(gram_scratch_covers_the_largest_segment) {
    mt_mem_plan p;
    const mt_backend *be = mt_backend_cpu_staged();
    mt_mem_plan_encoder(&p, &MINILM, be, &(mt_mem_run){64, 4, 32, 1, 1, 3, 0, 0, 30000000});
    CHECK(item(&p, "backward scratch") == mt_ws_gram(MT_GRAM_MAX_K, 30000000));  // (256 + 136 x 3663) doubles
    CHECK(mt_ws_gram(MT_GRAM_MAX_K, 30000000) == (256 + 136 * 3663) * 8);
    mt_mem_plan_encoder(&p, &MINILM, be, &(mt_mem_run){64, 4, 32, 1, 1, 3, 0, 0, 1000000});
    CHECK(item(&p, "backward scratch") == (256 + 136 * 2773) * 8);
    mt_mem_plan_encoder(&p, &MINILM, be, &(mt_mem_run){64, 4, 32, 0, 0, 0, 0, 0, 30000000});  // inference: none
    CHECK(item(&p, "backward scratch") == 0);
}

// The task model's items, MiniLM width (C 384), 64 tokens, 4 examples (8 sentences), on a device
// backend. sbert-cnn-bilstm, 128 filters of widths 1..4, H 128: conv 128*384*(1+2+3+4) + 512
// = 492032 floats, LSTM 2 x (512*384 + 512*128 + 1024) = 526336; D = 384 + 512 + 256 = 1152.
TEST(sentence_model_items) {
    mt_sentence_config sc = mt_sentence_default_config(MT_SENT_SBERT_CNN_BILSTM, 384, 128, 128);
    mt_taskmodel tm;
    mt_taskmodel_init(&tm, &sc, MT_PAIR_ENSEMBLE, 1);
    CHECK(tm.n_sent == 492032u + 526336u && tm.D == 1152);
    const mt_backend *be = mt_backend_cpu_staged();
    mt_mem_plan p = {0};
    mt_mem_run r = {64, 12, 32, 1, 1, 3, 0, 0, 0};
    mt_mem_plan_taskmodel(&p, &tm, be, &r, 4);
    size_t S = tm.n_sent * 4;
    CHECK(item(&p, "sentence model parameters") == S && item(&p, "sentence model gradients") == S);
    CHECK(item(&p, "sentence model AdamW moments") == 2 * S && item(&p, "sentence model PCGrad copies") == 3 * S);
    // steps (8+1 + 2*64 int32) 548; fmap, dfmap 2 x 64*512*4; im2col 64*384*4 *4; pool, argmax
    // 2 x 8*512*4; hfin 2*8*128*4; per LSTM direction gates, dgates 2 x 131072, cell, hidden,
    // hprev 3 x 32768, step_g 16384, step_h, dc 2 x 4096; dbuf 8*512*4
    size_t sent = 548 + 2 * 131072 + 393216 + 2 * 16384 + 8192 + 2 * (2 * 131072 + 3 * 32768 + 16384 + 2 * 4096) +
                  16384;
    // on the device: emb, demb 2 x 8*1152*4, cls, dcls 2 x 4*384*4, offsets 13*4
    size_t dev = 2 * 36864 + 2 * 6144 + 52;
    CHECK(mt_sentence_acts_bytes(&tm.sent, 64, 8) == sent);
    CHECK(item(&p, "sentence model activations") == sent + dev);
    CHECK(p.n == 5 && p.total == 7 * S + sent + dev);
    // the 16-bit operand bound: the widest conv weight 128 x 384*4 and W_ih [512, 384] (196608)
    // beat im2col's 64 x 1536 here
    CHECK(mt_sentence_operand_floats(&tm.sent, 64, 8) == 196608);
    CHECK(mt_sentence_operand_floats(&tm.sent, 1000, 8) == 1000 * 1536);
    // a reservation takes exactly the planned bytes (the same code sizes and allocates)
    mt_tm_acts a = {0};
    mt_taskmodel_to_backend(&tm, be);
    mt_tm_acts_reserve(&tm, &a, 4, 64);
    CHECK(a.cap_B == 4 && a.cap_N == 64 && a.sacts.max_N == 64 && a.sacts.max_B == 8);
    mt_tm_acts_free(&a);
    mt_taskmodel_free(&tm);

    // mean: no parameters; the step lists, dbuf [8, 384] and the device copies (D = 384)
    sc = mt_sentence_default_config(MT_SENT_MEAN, 384, 128, 128);
    mt_taskmodel_init(&tm, &sc, MT_PAIR_ENSEMBLE, 1);
    memset(&p, 0, sizeof p);
    mt_mem_plan_taskmodel(&p, &tm, be, &r, 4);
    CHECK(p.n == 1 && item(&p, "sentence model activations") == 548 + 12288 + 2 * 12288 + 2 * 6144 + 52);
    CHECK(mt_sentence_operand_floats(&tm.sent, 64, 8) == 0);
    memset(&p, 0, sizeof p);  // the CPU keeps no device copies
    mt_mem_plan_taskmodel(&p, &tm, mt_backend_cpu(), &r, 4);
    CHECK(item(&p, "sentence model activations") == 548 + 12288);
    mt_taskmodel_free(&tm);
}

// Runs fn in a child with stderr captured into msg; returns its exit status (-1: no normal exit).
static int in_child(void (*fn)(void), char *msg, size_t n) {
    int fd[2];
    if (pipe(fd)) return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        fn();
        _exit(0);
    }
    close(fd[1]);
    size_t len = 0;  // until EOF: the message may come in several writes
    char buf[256];
    for (ssize_t r; (r = read(fd[0], buf, sizeof buf)) > 0;)
        for (ssize_t i = 0; i < r && len + 1 < n; i++) msg[len++] = buf[i];
    msg[len] = 0;
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// cpu-staged keeps CUDA's reservation: attention over 3 sequences padded to 40 asks for more
// padded-head memory than a shape of 64 tokens in 2 sequences of at most 32 reserved.
static void attend_after_reserving(mt_workspace_shape s) {
    const mt_backend *be = mt_backend_cpu_staged();
    be->reserve(&s);
    int32_t offsets[4] = {0, 40, 41, 42};
    int64_t att_offsets[3] = {0, 2 * 40 * 40, 2 * 40 * 40 + 2};
    static float qkv[42 * 24], out[42 * 8];  // static: nothing for LeakSanitizer when mt_die exits
    be->attention_forward(out, NULL, qkv, offsets, att_offsets, 3, 40, 8, 2);
}
static void over_ask(void) { attend_after_reserving((mt_workspace_shape){64, 2, 32, 8, 2, 32, 0, 0, 0, 0}); }
static void within(void) { attend_after_reserving((mt_workspace_shape){64, 3, 40, 8, 2, 32, 0, 0, 0, 0}); }

TEST(an_ask_beyond_the_reservation_dies_naming_the_workspace) {
    char msg[1024];
    int st = in_child(over_ask, msg, sizeof msg);
    CHECK(st == 1);
    CHECK(strstr(msg, "attention Q workspace needs 3840 bytes but 2048 were reserved") != NULL);
    if (st != 1 || !strstr(msg, "attention Q workspace")) printf("# status %d: %s\n", st, msg);
    CHECK(in_child(within, msg, sizeof msg) == 0);
}

TEST(sizes_parse) {
    CHECK(mt_parse_size("x", "1M") == 1048576);
    CHECK(mt_parse_size("x", "20G") == 20ull << 30);
    CHECK(mt_parse_size("x", "512MiB") == 512ull << 20);
    CHECK(mt_parse_size("x", "1.5k") == 1536);
    CHECK(mt_parse_size("x", "1000") == 1000);
}

int main(void) {
    RUN(minilm_parameters);
    RUN(minilm_inference_plan_on_the_cpu);
    RUN(minilm_training_plan_on_a_device_backend);
    RUN(padded_attention_is_bounded_by_the_tokens);
    RUN(embed_plans_attention_by_sequences_x_longest);
    RUN(gram_scratch_covers_the_largest_segment);
    RUN(sentence_model_items);
    RUN(an_ask_beyond_the_reservation_dies_naming_the_workspace);
    RUN(sizes_parse);
    return check_summary();
}
