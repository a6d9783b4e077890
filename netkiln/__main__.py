from netkiln.cli import app

app(prog_name="netkiln")
