"""Local stand-ins for the services the daemon talks to: a fake Twitch (OAuth, Helix, EventSub) and a
real OBS Studio started headless; and a small stand-in umT5 tokenizer.json (the real one cannot be fetched
where the tests and the start-up bench run). The tests use them, and so does `streamer soak`, which runs the real
daemon against them; they live in the package (not under tests/) so that an installed `streamer soak`
can start them too. Nothing in the daemon imports this package.
"""
