"""encoder_step_torch.py — PyTorch's side of bench/encoder_step.sh: one training step
(forward + backward, dropout 0.1, fp32) of BertModel on B sequences of L tokens, REPS timed
steps after one warm-up. Prints "cpu_ms=BEST wall_ms=BEST cpu_mean_ms=MEAN rss_kib=PEAK"
(process CPU time, wall time, peak resident memory of the whole process).
   python3 encoder_step_torch.py MODEL_DIR B L THREADS REPS"""
import resource, sys, time, torch
from transformers import BertModel
torch.set_num_threads(int(sys.argv[4]))
B, L, reps = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
m = BertModel.from_pretrained(sys.argv[1], hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1).train()
ids = torch.tensor([[1000 + ((b * L + t) * 7919) % 20000 for t in range(L)] for b in range(B)])
cpu, wall = [], []
for r in range(reps + 1):
    m.zero_grad(set_to_none=False)  # outside the timing, as the C side's gradients are allocated once
    c0, w0 = time.process_time(), time.perf_counter()
    h = m(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    (h * h).sum().mul(1e-3).backward()
    cpu.append(time.process_time() - c0)
    wall.append(time.perf_counter() - w0)
cpu, wall = cpu[1:], wall[1:]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"cpu_ms={min(cpu)*1e3:.1f} wall_ms={min(wall)*1e3:.1f} cpu_mean_ms={sum(cpu)/len(cpu)*1e3:.1f} rss_kib={rss}")
