package config

// DefaultPrices returns the list prices in USD per million tokens (input,
// output) of August 2026, used for models the config's prices do not name.
func DefaultPrices() map[string]ModelPrice {
	return map[string]ModelPrice{
		"mistral-small-latest":  {InputPerM: 0.15, OutputPerM: 0.60},
		"mistral-medium-latest": {InputPerM: 1.50, OutputPerM: 7.50},
		"mistral-large-latest":  {InputPerM: 0.50, OutputPerM: 1.50},
		"codestral-latest":      {InputPerM: 0.30, OutputPerM: 0.90},
		"mistral-embed":         {InputPerM: 0.10, OutputPerM: 0},
		"codestral-embed":       {InputPerM: 0.15, OutputPerM: 0},
		"ministral-14b-latest":  {InputPerM: 0.20, OutputPerM: 0.20},
		"ministral-8b-latest":   {InputPerM: 0.15, OutputPerM: 0.15},
		"ministral-3b-latest":   {InputPerM: 0.10, OutputPerM: 0.10},
	}
}

var defaultPrices = DefaultPrices()

// Price returns the price of model: the config's prices first, then the
// built-in defaults. ok is false for a model neither knows.
func (c *Config) Price(model string) (ModelPrice, bool) {
	if c != nil {
		if p, ok := c.Prices[model]; ok {
			return p, true
		}
	}
	p, ok := defaultPrices[model]
	return p, ok
}
