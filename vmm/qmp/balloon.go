package qmp

// Balloon is what the balloon commands act on (*vmm.VM provides it
// through an adapter in cmd/stratovirt).
type Balloon interface {
	// SetBalloonTarget asks the guest to shrink or grow to bytes of RAM.
	SetBalloonTarget(bytes uint64) error
	// BalloonActual returns the guest's RAM minus its balloon, in bytes.
	BalloonActual() (uint64, error)
}

// RegisterBalloon replaces the balloon placeholders with balloon and
// query-balloon for b. balloon emits BALLOON_CHANGED with the actual size
// after the reply (the guest adjusts in the background).
func RegisterBalloon(s *Server, b Balloon) {
	s.Handle("balloon", func(r *Request) (any, error) {
		var args struct {
			Value *uint64 `json:"value"`
		}
		if err := r.Decode(&args); err != nil {
			return nil, err
		}
		if args.Value == nil {
			return nil, Errorf(ClassGeneric, "Invalid parameter 'value'")
		}
		if err := b.SetBalloonTarget(*args.Value); err != nil {
			return nil, Errorf(ClassDeviceNotActive, "%v", err)
		}
		if actual, err := b.BalloonActual(); err == nil {
			s.Event("BALLOON_CHANGED", map[string]any{"actual": actual})
		}
		return nil, nil
	})
	s.Handle("query-balloon", func(r *Request) (any, error) {
		if err := r.Decode(&struct{}{}); err != nil {
			return nil, err
		}
		actual, err := b.BalloonActual()
		if err != nil {
			return nil, Errorf(ClassDeviceNotActive, "No balloon device has been activated")
		}
		return map[string]any{"actual": actual}, nil
	})
}
