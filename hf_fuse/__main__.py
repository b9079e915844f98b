"""``python -m hf_fuse``: the hf-fuse command, as ``accelerate launch -m hf_fuse`` and ``torchrun -m hf_fuse`` start it."""

from .cli import main

if __name__ == "__main__":
    main()
