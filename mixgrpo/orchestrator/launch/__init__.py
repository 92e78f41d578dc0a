"""The same config elsewhere: a RunPod GPU pod from a laptop (``runpod``), an existing Ray cluster (``submit``).

- ``secrets``: the API key and HF token, and redaction of both from anything shown.
- ``pod``: the RunPod API through the official SDK (GPU lookup and price, create, wait, terminate).
- ``ssh``: key pair, commands, upload and pull of the run directory over plain ``ssh`` + ``tar``.
- ``remote``: the scripts that run on the pod (install, detached ``mixgrpo train``, cap guard).
- ``runpod``: the launch itself, follow / fetch / stop, and the pod's termination on every way out.
- ``submit``: ``mixgrpo submit`` through Ray's Job Submission API.
"""


class LaunchError(RuntimeError):
    """A launch step that failed; the message is one line, safe to show (no secrets)."""
