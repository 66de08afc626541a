"""Run a command with Linux's memory-deny-write-execute set (PR_SET_MDWE, Linux ≥ 6.3): the
kernel's form of systemd's MemoryDenyWriteExecute=yes. Inherited by every child and kept across
exec. Exit 75 (EX_TEMPFAIL) when the kernel lacks it."""
import ctypes
import os
import sys

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1

libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print(f"mdwe_exec: PR_SET_MDWE refused: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
    sys.exit(75)
os.execvp(sys.argv[1], sys.argv[1:])
