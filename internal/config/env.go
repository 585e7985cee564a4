package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"

	"github.com/caarlos0/env/v11"
)

// Explain rewrites the errors of env.Parse into T, which name struct
// fields, to name the variables: show(name) renders one (NAME="value",
// secrets hidden), followed by what is wrong with its value.
func Explain[T any](err error, show func(name string) string) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if !errors.As(e, &pe) {
			out = append(out, e)
			continue
		}
		name := pe.Name
		if f, ok := reflect.TypeFor[T]().FieldByName(pe.Name); ok {
			name = f.Tag.Get("env")
		}
		out = append(out, fmt.Errorf("%s: %s", show(name), plainParseError(pe.Err)))
	}
	return errors.Join(out...)
}

func plainParseError(err error) string {
	var ne *strconv.NumError
	if errors.As(err, &ne) {
		if ne.Func == "ParseBool" {
			return "not a boolean (want true or false)"
		}
		return "not an integer"
	}
	return err.Error()
}
