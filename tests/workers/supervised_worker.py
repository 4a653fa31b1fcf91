"""A multi-process job's process under efficientnet_jax.supervision, acted out without JAX:
`python supervised_worker.py MODE`. The parent runs this script again as its child and, when
`run_child` calls on its lost-process callback, prints one line naming what it was given (the held
output goes to stdout, for the test to read). The child acts out MODE:

- `sigterm`: says `ready <pid>` and waits; on SIGTERM it logs a Python record and exits 0.
- `abort`: reports step 7, writes a C++ warning record with a continuation line and JAX's fatal line
  for an unreachable coordination service, and aborts (as JAX's client does when process 0 is lost).
- `lost`: reports step 5 and process 1 lost, and exits 1 (as the heartbeat watch does).
- `crash`: writes a C++ error record, then a Python traceback, and exits 3.
"""

import importlib.util
import os
import signal
import sys
import time

# The module alone, without the package's __init__ (which imports JAX): each start costs milliseconds.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SOURCE = os.path.join(REPO, "efficientnet_jax", "supervision.py")
_SPEC = importlib.util.spec_from_file_location("supervision", _SOURCE)
supervision = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(supervision)

CPP_WARNING = (
    "W1205 07:35:49.601287   23887 preemption_sync_manager.cc:147] Failed to retrieve preemption notice\n"
    "Additional GRPC error information from remote target coordination_service\n"
)
JAX_ABORT = (
    f"F1205 07:35:49.601400   23890 client.h:80] {supervision.JAX_FATAL}. absl::Status: UNAVAILABLE: "
    f"{supervision.SERVICE_UNREACHABLE}.\n*** Check failure stack trace: ***\nFatal Python error: Aborted\n"
)


def on_lost_process(state: dict, held_output: str) -> None:
    sys.stdout.write(held_output)
    sys.stdout.flush()
    sys.stderr.write(
        f"supervised_worker.py: process {state['lost']} of {state['processes']} lost ({state['cause']}) "
        f"at step {state.get('step')}; {state['details'] or 'no details'}\n"
    )
    sys.stderr.flush()
    os._exit(1)


def main(mode: str) -> None:
    if not supervision.is_child():
        supervision.run_child(on_lost_process)
    supervision.end_with_parent()
    supervision.report(process=1, processes=2, log=None)
    if mode == "sigterm":
        stopped = []
        signal.signal(signal.SIGTERM, lambda signum, frame: stopped.append(signum))
        print(f"ready {os.getpid()}", file=sys.stderr, flush=True)
        while not stopped:
            time.sleep(0.01)
        print(f"I1205 07:35:50.000000 140000 trainer.py:1] stopped by signal {stopped[0]}", file=sys.stderr)
    elif mode == "abort":
        supervision.report(step=7)
        sys.stderr.write(CPP_WARNING + JAX_ABORT)
        sys.stderr.flush()
        os.abort()
    elif mode == "lost":
        supervision.report(step=5)
        supervision.report(lost=[1], cause="no heartbeat for 10 s", details="counts unchanged")
        os._exit(1)
    elif mode == "crash":
        sys.stderr.write("E1205 07:35:49.601287   23887 gloo.cc:12] Connection reset by peer\n")
        sys.stderr.write("Traceback (most recent call last):\nRuntimeError: a bug\n")
        sys.exit(3)


if __name__ == "__main__":
    main(sys.argv[1])
