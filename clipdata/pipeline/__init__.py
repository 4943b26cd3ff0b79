"""The convert pipeline below the command: plan (crop/scene transform and output names),
jobs (the per-image decode-crop-encode work), pool (worker processes, results in order) and
journal (what `--resume` replays). Named apart from `convert` so that `clipdata.convert`
stays the API function."""
