package agent

// register wires every capability this build serves into the dispatcher.
// Hello's capabilities are derived from what is registered here.
func (a *Agent) register() {
	d := a.dispatch
	Handle(d, "ping", Light, a.ping)
	Handle(d, "metrics", Light, a.sampler.Metrics)
}
