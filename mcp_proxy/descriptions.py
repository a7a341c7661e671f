"""The texts that agents read: server instructions and tool descriptions."""

INSTRUCTIONS = (
    "superpool runs one-shot agents on a shared pool. Call super_agent_run to "
    "delegate a self-contained subtask; on POOL_BUSY back off with jitter and "
    "retry (or pass wait_for_slot_s), on POOL_UNREACHABLE do not retry blindly. "
    "super_agent_status shows free slots, super_agent_result reads a run's "
    "result by run_id and super_agent_cancel stops a run."
)

RUN_DESCRIPTION = """\
Run one prompt on a fresh one-shot agent from the shared superpool and return \
its final answer.

Use it to hand a self-contained subtask (a review, a summary, a focused change) \
to another agent that works in parallel with you. The agent gets only the \
prompt and, with cwd_mode "caller", the files under caller_cwd. It cannot ask \
you questions, so put everything it needs into the prompt.

A run can take minutes. Ask for progress notifications: the proxy sends one \
at least every few seconds, each with the run_id. If your call ends before \
the run does, read the result later with super_agent_result(run_id).

Read `status` in the result:
- OK: `output` contains the answer.
- POOL_BUSY: every runner slot is taken. Wait `retry_after_s` seconds plus \
random jitter, then call again, and double the wait after each further \
POOL_BUSY. Or pass wait_for_slot_s and the proxy waits for a slot itself.
- POOL_UNREACHABLE: the pool cannot be reached, so retrying soon will not \
help. Tell the user, or do the work yourself.
- INVALID_REQUEST: an argument is wrong and `error.message` names it. Fix it \
and call again.
- RUN_FAILED, RUN_TIMEOUT, CANCELLED: the run gave no answer; `error.message` \
says why.
"""

STATUS_DESCRIPTION = """\
Show the superpool's runners and slots: how many slots are free, busy and \
queued. With 0 free slots, super_agent_run returns POOL_BUSY, and with no \
runner it returns POOL_UNREACHABLE.
"""

RESULT_DESCRIPTION = """\
Read the final result of a superpool run by its run_id, for example after a \
super_agent_run call that ended with RUN_TIMEOUT or whose connection was \
lost. The result has the same fields as super_agent_run's. Status NO_RESULT \
means there is no result yet or the run_id is unknown: a queued or running \
run has none until it finishes. The pool keeps results for 24 hours by \
default.
"""

CANCEL_DESCRIPTION = """\
Cancel a queued or running superpool run by its run_id and return its final \
result: CANCELLED, or the result it had reached already. isError is set only \
when the cancel itself failed (POOL_UNREACHABLE, INVALID_REQUEST).
"""
