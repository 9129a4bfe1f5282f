from mask_grpo.cli import main

raise SystemExit(main())
