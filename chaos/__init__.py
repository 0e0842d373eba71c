"""The chaos suite: faults on a real cluster under clinical load (``make chaos``)."""
