module github.com/herald-rt/herald

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0 // indirect
	github.com/dolthub/maphash v0.1.0 // indirect
	github.com/golang-jwt/jwt/v5 v5.3.1 // indirect
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/klauspost/compress v1.20.1 // indirect
	github.com/lxzan/gws v1.8.9 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	golang.org/x/time v0.16.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
