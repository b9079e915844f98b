"""``python -m hf_eval``: the hf-eval command, as ``accelerate launch -m hf_eval`` and ``torchrun -m hf_eval`` start it."""

from .cli import main

if __name__ == "__main__":
    main()
