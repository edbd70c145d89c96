"""mes: a print-farm manufacturing execution server on Raft-replicated state."""
