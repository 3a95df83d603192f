"""Stage 5, build: export each segment at each profile's ranges and compile it with AOTInductor."""
