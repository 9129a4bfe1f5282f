from shared.flow_grpo.cli import main

main()
