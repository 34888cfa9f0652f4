"""Process wiring: the gRPC and admin servers of one agent (`service`, `admin`), worker
processes and their supervisor (`workers`), and the standalone gateway (`gateway`)."""
