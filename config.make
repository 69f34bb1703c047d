# Makefile rule for the Rust static library (see ./config). cargo tracks its own sources, so
# the rule always runs and cargo decides what to rebuild.
cat << END >> $NGX_MAKEFILE

.PHONY: $ngx_push_stream_lib
$ngx_push_stream_lib:
	cd $ngx_addon_dir && NGINX_SOURCE_DIR="$ngx_push_stream_src" NGINX_BUILD_DIR="$ngx_push_stream_objs" \\
		${NGX_CARGO:-cargo} rustc --lib -p ngx-push-stream --crate-type staticlib \\
		--no-default-features --profile $ngx_push_stream_profile \\
		--target-dir "$ngx_push_stream_objs/ngx_http_push_stream_cargo"

END
