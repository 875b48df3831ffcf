from emi_ray.cli import main

main()
