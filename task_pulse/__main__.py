from task_pulse.cli import main

main()
