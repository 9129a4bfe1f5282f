from chunk_grpo.cli import main

raise SystemExit(main())
