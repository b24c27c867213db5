from task_pulse.entry import main

main()
