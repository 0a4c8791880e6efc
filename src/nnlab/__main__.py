"""``python -m nnlab``: the same CLI as the ``nnlab`` script (so ``torchrun -m nnlab`` works)."""
from nnlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
